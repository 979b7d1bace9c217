"""Data: the bundled datasets, your own tables with their preprocessing, model export.

``datasets``: the four bundled real datasets (shipped files, read with NumPy).
``tabular``: CSV / Parquet / .npz tables, preprocessing fitted on the training split.
``export``: params and the network description to .npz / .safetensors and back.
"""

from jaxmlp.data import datasets, export, tabular

__all__ = ["datasets", "export", "tabular"]
