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

__all__ = ["FORMAT_VERSION", "Model", "save", "load", "load_model"]

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
         metadata: Optional[dict] = None, ensemble: Optional[int] = None) -> None:
    """Writes ``params`` of ``net`` (and JSON ``metadata``) to ``path`` (.npz or .safetensors).

    ``ensemble=K``: ``params`` are K members stacked along a leading axis
    (:func:`jaxmlp.train.ensemble.init_ensemble`), saved as such (``W[l]`` of shape
    (K, n[l], n[l-1])); :func:`load` returns them stacked, with ``metadata["ensemble"] = K``.

    Raises TypeError/ValueError, before writing anything, for a ``net`` that is not a Network,
    params that do not match it (shapes from ``net.param_shapes()``), non-finite parameters,
    metadata that is not a JSON-serialisable dict, or another extension.
    """
    from jaxmlp.nn.checks import check_params, require_network
    from jaxmlp.nn.scalars import positive_int

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}.")
    path = os.fspath(path)
    ext = _format(path)
    net = require_network(net)
    if ensemble is None:
        check_params(net, params)
    else:
        from jaxmlp.train.ensemble import ensemble_size

        K = positive_int("ensemble", ensemble)
        got = ensemble_size(net, params)  # one leading axis; each member fits net
        if got != K:
            raise ValueError(f"params: expected {K} members stacked along axis 0 "
                             f"(ensemble={K}), got {got}.")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict or None, got {type(metadata).__name__}.")
    header = {"format_version": FORMAT_VERSION,
              "network": {"sizes": list(net.sizes), "activations": list(net.activations),
                          "cost": net.cost},
              "metadata": metadata or {}, **({"ensemble": K} if ensemble is not None else {})}
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
    header["sha256"] = _digest(header, tensors)  # checked by load: damage is refused
    text = json.dumps(header, allow_nan=False)
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


def _digest(header: dict, tensors: dict) -> str:
    """sha256 of the header (format, network, metadata; without the digest itself, as
    canonical JSON) and of every tensor's name, dtype, shape and bytes, in name order."""
    import hashlib

    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "sha256"},
                                  sort_keys=True, allow_nan=False).encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"\n{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load(path: Union[str, os.PathLike], *,
         verify: bool = True) -> tuple[Network, list[dict[str, Any]], dict]:
    """Reads a file written by :func:`save`.

    Every file carries the sha256 of its header (network, metadata: the preprocessing) and
    arrays, written by :func:`save`; ``verify=True`` (default) recomputes and compares it,
    in both formats (.npz's zip CRC covers its arrays only, .safetensors has no check of
    its own). ``verify=False`` reads a file written before digests existed.

    Returns:
      (the Network, params ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]`` as JAX arrays of
      the saved dtype, the metadata dict).

    Raises:
      ValueError naming the file for one that does not exist, cannot be read, is not a jaxmlp
      export, describes an invalid network (e.g. an activation not registered in this
      process) or holds arrays that do not match it, or whose digest does not match (a
      damaged file) or is missing; TypeError for float64 parameters while 64-bit mode is off.
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
        K = header.get("ensemble")
        if K is not None and not (isinstance(K, int) and K >= 1):
            raise ValueError(f"ensemble {K!r} is not a positive integer")
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
    want = {f"{k}[{l}]": shape if K is None else (K, *shape)
            for l, layer in enumerate(net.param_shapes(), start=1) for k, shape in layer.items()}
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
    if verify:
        if "sha256" not in header:
            raise ValueError(f"path: {path!r} carries no digest (written before exports had "
                             "one); load it with verify=False if you trust it.")
        if _digest(header, arrays) != header["sha256"]:
            raise ValueError(f"path: {path!r}: its arrays or metadata do not match the digest "
                             "recorded when it was written (sha256): the file is damaged.")
    if K is not None:
        metadata = {**metadata, "ensemble": K}
    return net, params, metadata


# ----------------------------------------------------------------------------- one-call loading


class Model:
    """A trained network with its preprocessing: predictions for rows, batch-first.

    ``model.predict(rows)`` / ``model.predict_proba(rows)`` take a pandas DataFrame with the
    training table's feature columns (any order; target columns ignored) or an array
    (n_samples, n_features) of those columns in training order (or, for a model saved
    without preprocessing, the network's n[0] inputs). An ensemble's members are averaged
    ((1/K) sum_k A[L]_k).

    Attributes: ``net``, ``params``, ``preprocessing`` (a
    :class:`jaxmlp.data.tabular.Preprocessing`, or None), ``metadata``, ``ensemble`` (K or
    None), ``task``, ``classes_`` (classification: class names; multilabel: the labels).
    """

    def __init__(self, net: Network, params, metadata: Optional[dict] = None):
        from jaxmlp.data.tabular import Preprocessing

        self.net, self.params, self.metadata = net, params, dict(metadata or {})
        self.ensemble = self.metadata.get("ensemble")
        prep = self.metadata.get("preprocessing")
        self.preprocessing = None if prep is None else Preprocessing.from_dict(prep)
        if self.preprocessing is not None and self.preprocessing.n_inputs != net.sizes[0]:
            raise ValueError(f"metadata: the preprocessing gives {self.preprocessing.n_inputs} "
                             f"inputs, the network takes n[0] = {net.sizes[0]}.")
        if self.preprocessing is not None:
            self.task = self.preprocessing.task
        else:
            self.task = {"categorical_cross_entropy": "classification",
                         "binary_cross_entropy": "classification",
                         "multilabel_cross_entropy": "multilabel"}.get(net.cost, "regression")
        prep = self.preprocessing
        self.classes_ = (np.asarray(prep.class_values)
                         if prep is not None and self.task == "classification"
                         and prep.class_values is not None
                         else np.asarray(prep.class_names, dtype=object)
                         if prep is not None and self.task != "regression"
                         else np.arange(max(2, net.sizes[-1])) if self.task == "classification"
                         else None)

    def __repr__(self) -> str:
        k = f", ensemble of {self.ensemble}" if self.ensemble else ""
        return f"Model({self.task}, network {'-'.join(map(str, self.net.sizes))}{k})"

    def inputs(self, rows) -> np.ndarray:
        """The network's standardised X, (n[0], m), for ``rows`` (see the class docstring)."""
        prep = self.preprocessing
        if prep is None:
            X = np.asarray(rows, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != self.net.sizes[0]:
                raise ValueError(f"X: expected an array (n_samples, {self.net.sizes[0]}), "
                                 f"got shape {X.shape}.")
            return X.T
        from jaxmlp.data import tabular

        pd = tabular.pandas_module()
        if not isinstance(rows, pd.DataFrame):
            A = np.asarray(rows)
            n = len(prep.feature_columns)
            if A.ndim != 2 or A.shape[1] != n:
                raise ValueError(f"X: expected a DataFrame or an array (n_samples, {n}) of the "
                                 f"feature columns {list(prep.feature_columns)}, got shape "
                                 f"{A.shape}.")
            rows = pd.DataFrame(A, columns=list(prep.feature_columns))
            rows = rows.infer_objects()
        return tabular.transform(prep, rows, dtype=np.float64)

    def outputs(self, rows) -> np.ndarray:
        """The network's output A[L] (averaged over an ensemble's members), batch-first
        (n_samples, n[L]), float64."""
        import jax.numpy as jnp

        from jaxmlp.nn.propagation import predict

        X = jnp.asarray(self.inputs(rows), dtype=self.params[0]["W"].dtype)
        if self.ensemble is None:
            A = predict(self.net, self.params, X)
        else:
            from jaxmlp.train.ensemble import ensemble_predict

            A = ensemble_predict(self.net, self.params, X)
        return np.asarray(A, dtype=np.float64).T

    def predict_proba(self, rows) -> np.ndarray:
        """(n_samples, classes): each class's probability (columns in ``classes_`` order);
        multilabel: (n_samples, labels), each label's probability."""
        if self.task == "regression":
            raise ValueError("predict_proba: a regression model has no class probabilities; "
                             "use predict.")
        A = self.outputs(rows)
        if self.task == "classification" and A.shape[1] == 1:
            return np.concatenate([1.0 - A, A], axis=1)
        return A

    def predict(self, rows) -> np.ndarray:
        """Classification: (n_samples,) class names; multilabel: (n_samples, labels) of 0/1;
        regression: values in the target's units, (n_samples,) for one target column, else
        (n_samples, targets)."""
        if self.task == "classification":
            return self.classes_[np.argmax(self.predict_proba(rows), axis=1)]
        if self.task == "multilabel":
            return (self.outputs(rows) >= 0.5).astype(np.int64)
        Y = self.outputs(rows)
        if self.preprocessing is not None:
            from jaxmlp.data.tabular import inverse_target

            Y = inverse_target(self.preprocessing, Y.T).T
        return Y[:, 0] if Y.shape[1] == 1 else Y


def load_model(path: Union[str, os.PathLike]) -> Model:
    """The trained model in ``path`` as a :class:`Model` (``predict``, ``predict_proba``).

    ``path``: a folder written by ``experiments/train.py`` (its ``model.npz``) or a file
    written by :func:`save` (.npz or .safetensors). ValueError naming the path when it holds
    no model or the model's metadata is damaged.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder or file path, got {type(path).__name__}.")
    path = os.fspath(path)
    if os.path.isdir(path):
        file = os.path.join(path, "model.npz")
        if not os.path.isfile(file):
            raise ValueError(f"path: the folder {path!r} holds no model.npz (train.py writes "
                             "it when a run completes).")
        path = file
    net, params, metadata = load(path)
    try:
        return Model(net, params, metadata)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"path: {path!r}: damaged preprocessing metadata ({e}).") from None
