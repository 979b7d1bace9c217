"""Placement: data parallelism by sharding annotations, several processes, the 2-D mesh.

``sharding``: one process, a mesh over its devices, batches split by columns.
``distributed``: ``jax.distributed`` processes, global arrays, the (data, model) mesh.
"""

from jaxmlp.parallel import distributed, sharding

__all__ = ["distributed", "sharding"]
