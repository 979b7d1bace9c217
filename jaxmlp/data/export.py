"""Parameters to a file with the network description, and back: ``.npz`` or ``.safetensors``.

::

    jaxmlp.data.export.save("model.npz", params, net, metadata={"preprocessing": prep.to_dict()})
    net, params, metadata = jaxmlp.data.export.load("model.npz")

The format follows the file's extension:

* ``.npz`` (NumPy only): one array per parameter, ``W[1]``, ``b[1]``, ..., ``W[L]``, ``b[L]``
  (layer numbers as in the derivations), plus ``__jaxmlp__``, a JSON string holding the format
  version, the network (sizes, activations, cost) and ``metadata``. Read with
  ``allow_pickle=False``: loading a file runs no code.
* ``.safetensors`` (the optional ``safetensors`` package, ``pip install 'jaxmlp[export]'``):
  the same tensor names, the JSON in the header's ``__metadata__`` under ``jaxmlp``.

Arrays keep their dtype and values bit for bit. ``metadata`` is any JSON-serialisable dict
(the training scripts store the preprocessing a prediction needs). Activations and costs are
stored by name: a network using a rule added with :func:`jaxmlp.register_activation` loads in
a process that has registered the same name.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

import numpy as np

from jaxmlp.nn.network import Network

__all__ = ["FORMAT_VERSION", "save", "load"]

FORMAT_VERSION = 1
_KEY = "__jaxmlp__"
_EXTENSIONS = (".npz", ".safetensors")


def _format(path: str, arg: str = "path") -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise ValueError(f"{arg}: expected a file ending in .npz or .safetensors, got {path!r}.")
    return ext


def _safetensors():
    try:
        import safetensors.numpy as stn  # optional: pip install 'jaxmlp[export]'
        from safetensors import safe_open
    except ImportError:
        raise ValueError("path: .safetensors files need the safetensors package "
                         "(pip install 'jaxmlp[export]' or 'safetensors>=0.4').") from None
    return stn, safe_open


def save(path: Union[str, os.PathLike], params, net: Network, *,
         metadata: Optional[dict] = None) -> None:
    """Writes ``params`` of ``net`` (and JSON ``metadata``) to ``path`` (.npz or .safetensors).

    Raises TypeError/ValueError, before writing anything, for a ``net`` that is not a Network,
    params that do not match it (shapes from ``net.param_shapes()``), non-finite parameters,
    metadata that is not a JSON-serialisable dict, or another extension.
    """
    from jaxmlp.nn.checks import check_params, require_network

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}.")
    path = os.fspath(path)
    ext = _format(path)
    net = require_network(net)
    check_params(net, params)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict or None, got {type(metadata).__name__}.")
    header = {"format_version": FORMAT_VERSION,
              "network": {"sizes": list(net.sizes), "activations": list(net.activations),
                          "cost": net.cost},
              "metadata": metadata or {}}
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata: expected a JSON-serialisable dict ({e}).") from None
    tensors = {}
    for l, layer in enumerate(params, start=1):
        for k in ("W", "b"):
            a = np.asarray(layer[k])
            if not np.all(np.isfinite(a)):
                raise ValueError(f"params[{l - 1}]['{k}'] (layer {l}): holds non-finite values.")
            tensors[f"{k}[{l}]"] = np.ascontiguousarray(a)
    from jaxmlp.train.outdir import atomic_path

    with atomic_path(path) as tmp:  # written whole, then renamed onto path
        if ext == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **tensors, **{_KEY: np.array(text)})
        else:
            stn, _ = _safetensors()
            stn.save_file(tensors, tmp, metadata={"jaxmlp": text})


def _read(path: str, ext: str) -> tuple[dict[str, np.ndarray], str]:
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # not a zip, truncated, pickled objects
            raise ValueError(f"path: cannot read {path!r} as a .npz file "
                             f"({type(e).__name__}: {e}).") from None
        text = arrays.pop(_KEY, None)
        if text is None or text.dtype.kind != "U" or text.ndim != 0:
            raise ValueError(f"path: {path!r} is a .npz file but not a jaxmlp export (no "
                             f"network description {_KEY!r}; arrays: {sorted(arrays)}).")
        return arrays, str(text)
    stn, safe_open = _safetensors()
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ValueError(f"path: cannot read {path!r} as a .safetensors file "
                         f"({type(e).__name__}: {e}).") from None
    if "jaxmlp" not in meta:
        raise ValueError(f"path: {path!r} is a .safetensors file but not a jaxmlp export (no "
                         "'jaxmlp' entry in its metadata).")
    return arrays, meta["jaxmlp"]


def load(path: Union[str, os.PathLike]) -> tuple[Network, list[dict[str, Any]], dict]:
    """Reads a file written by :func:`save`.

    Returns:
      (the Network, params ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]`` as JAX arrays of
      the saved dtype, the metadata dict).

    Raises:
      ValueError naming the file for one that does not exist, cannot be read, is not a jaxmlp
      export, describes an invalid network (e.g. an activation not registered in this
      process) or holds arrays that do not match it; TypeError for float64 parameters while
      64-bit mode is off.
    """
    import jax
    import jax.numpy as jnp

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}.")
    path = os.fspath(path)
    ext = _format(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: file {path!r} does not exist.")
    arrays, text = _read(path, ext)
    try:
        header = json.loads(text)
        version, desc = header["format_version"], header["network"]
        metadata = header.get("metadata") or {}
        sizes, activations, cost = desc["sizes"], desc["activations"], desc["cost"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"path: {path!r}: the network description is damaged ({e!r}).") from None
    if version != FORMAT_VERSION:
        raise ValueError(f"path: {path!r} has format version {version}; this jaxmlp reads "
                         f"version {FORMAT_VERSION}.")
    try:
        net = Network(sizes=tuple(sizes), activations=tuple(activations), cost=cost)
    except (TypeError, ValueError) as e:
        hint = (" (register it first with jaxmlp.register_activation)"
                if "activations" in str(e) else "")
        raise ValueError(f"path: {path!r} describes a network this process cannot build: "
                         f"{e}{hint}") from None
    want = {f"{k}[{l}]": shape for l, layer in enumerate(net.param_shapes(), start=1)
            for k, shape in layer.items()}
    if set(arrays) != set(want):
        raise ValueError(f"path: {path!r} holds arrays {sorted(arrays)}, expected {sorted(want)} "
                         f"for sizes {net.sizes}.")
    params = []
    for l in range(1, net.num_layers + 1):
        layer = {}
        for k in ("W", "b"):
            a = arrays[f"{k}[{l}]"]
            if a.shape != want[f"{k}[{l}]"] or a.dtype.kind != "f":
                raise ValueError(f"path: {path!r}: {k}[{l}] has shape {a.shape} {a.dtype}, "
                                 f"expected {want[f'{k}[{l}]']} floating.")
            if a.dtype == np.float64 and not jax.config.jax_enable_x64:
                raise TypeError(f"path: {path!r} holds float64 parameters; turn on 64-bit mode "
                                "first (jax.config.update('jax_enable_x64', True)).")
            layer[k] = jnp.asarray(a)
        params.append(layer)
    return net, params, metadata
