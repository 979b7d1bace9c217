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

Arrays keep their dtype and values bit for bit (float16, bfloat16, float32, float64; NumPy's
format has no bfloat16, so a .npz stores those arrays as their uint16 bits and names them in
the JSON's ``"dtypes"``). ``metadata`` is any JSON-serialisable dict with text keys, without
the reserved key ``"ensemble"`` (set by ``ensemble=K``; the training scripts store the
preprocessing a prediction needs). ``~`` in a path is expanded; a path in a folder that does
not exist, or naming a folder, is refused before anything is written. Activations and costs are
stored by name: a network using a rule added with :func:`jaxmlp.register_activation` (or
:func:`~jaxmlp.register_cost`) loads in a process that has registered the same name with the
same definition. The header's ``"rules"`` holds each registered rule's fingerprint (its values
at fixed points in float64, to 6 significant digits:
:func:`jaxmlp.nn.costs.rule_fingerprints`); loading refuses, naming the rule, one now
registered under that name whose values there differ (another function, which would predict
otherwise). Files without ``"rules"`` (built-in rules only, or written before fingerprints
existed) load as before; the format version is unchanged.

A Laplace posterior (:class:`jaxmlp.laplace.Posterior`) has a file of its own,
:func:`save_posterior` / :func:`load_posterior` (``laplace.npz`` in a ``train.py --laplace``
run folder, beside ``model.npz``, which it leaves unchanged): the same layout and digest, the
header's ``"content": "laplace_posterior"``, its own :data:`POSTERIOR_FORMAT_VERSION`, the
posterior's static fields, and its arrays by :meth:`~jaxmlp.laplace.Posterior.to_arrays`'s
names (the MAP included, so the file stands alone; :func:`load_model` checks that it is the
posterior of the model beside it).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

import numpy as np

from jaxmlp.nn.network import Network

__all__ = ["FORMAT_VERSION", "Model", "POSTERIOR_FILE", "POSTERIOR_FORMAT_VERSION", "save",
           "load", "load_model", "load_posterior", "save_posterior"]

FORMAT_VERSION = 1
#: The version of the posterior files of :func:`save_posterior`.
POSTERIOR_FORMAT_VERSION = 1
#: The posterior's file name in a run folder (beside model.npz).
POSTERIOR_FILE = "laplace.npz"
_POSTERIOR = "laplace_posterior"
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


def _output_path(path) -> tuple[str, str]:
    """(path with ``~`` expanded, extension) of a file to write; TypeError / ValueError /
    OSError naming ``path`` before anything is written: not a path, another extension, a
    folder, or a folder that does not exist."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}.")
    path = os.path.expanduser(os.fspath(path))
    ext = _format(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"path: {path!r} is a folder; expected the path of a file "
                                "ending in .npz or .safetensors.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        cls = NotADirectoryError if os.path.exists(folder) else FileNotFoundError
        raise cls(f"path: cannot write {path!r}: the folder {folder!r} {what} (create it "
                  "first, e.g. os.makedirs).")
    return path, ext


#: Keys of the JSON header that :func:`save` sets itself (refused in ``metadata``).
_RESERVED = ("ensemble",)


def _check_metadata(metadata, reserved=()) -> dict:
    """``metadata`` (None -> {}) after the checks of :func:`save`: a dict whose keys, at
    every level, are strings (JSON turns other keys into text, and mixed keys cannot be
    sorted for the digest), none of them ``reserved``, and whose values JSON can write."""
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict or None, got {type(metadata).__name__}.")
    metadata = metadata or {}

    def keys(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise TypeError(f"{where}: expected text keys (JSON object keys), got the "
                                    f"key {k!r} ({type(k).__name__}).")
                keys(v, f"{where}[{k!r}]")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                keys(v, f"{where}[{i}]")

    keys(metadata, "metadata")
    for k in reserved:
        if k in metadata:
            raise ValueError(f"metadata: the key {k!r} is reserved (the ensemble size, stored "
                             f"from save's ensemble=K), got metadata[{k!r}] = "
                             f"{metadata[k]!r}; use another name.")
    try:
        json.dumps(metadata, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata: expected a JSON-serialisable dict ({e}).") from None
    return metadata


def _bfloat16():
    import ml_dtypes  # a dependency of jax

    return np.dtype(ml_dtypes.bfloat16)


def _floating(dtype) -> bool:
    """float16/32/64 or bfloat16 (NumPy's kind 'V' for the latter)."""
    return np.dtype(dtype).kind == "f" or np.dtype(dtype) == _bfloat16()


def _decode(path: str, header: dict, arrays: dict) -> dict:
    """``arrays`` with the bfloat16 ones of a .npz restored: NumPy's format has no bfloat16,
    so :func:`save` stores them as their uint16 bits and names them in the header's
    ``"dtypes"`` (absent in other files: ``arrays`` unchanged)."""
    dtypes = header.get("dtypes")
    if dtypes is None:
        return arrays
    if not isinstance(dtypes, dict):
        raise ValueError(f"path: {path!r}: the header's 'dtypes' is damaged ({dtypes!r}).")
    out = dict(arrays)
    for name, dt in dtypes.items():
        a = arrays.get(name)
        if dt != "bfloat16" or a is None or a.dtype != np.uint16:
            raise ValueError(f"path: {path!r}: the header's 'dtypes' is damaged ({name!r}: "
                             f"{dt!r}, stored {None if a is None else a.dtype}).")
        out[name] = a.view(_bfloat16())
    return out


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

    path, ext = _output_path(path)
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
    metadata = dict(_check_metadata(metadata, _RESERVED if ensemble is None else ()))
    if ensemble is not None and "ensemble" in metadata:  # load's dict, saved again: same K
        given = metadata.pop("ensemble")
        if isinstance(given, bool) or given != K:
            raise ValueError(f"metadata: the key 'ensemble' is reserved (the ensemble size, "
                             f"here ensemble={K}), got metadata['ensemble'] = {given!r}.")
    header = {"format_version": FORMAT_VERSION,
              "network": {"sizes": list(net.sizes), "activations": list(net.activations),
                          "cost": net.cost},
              "metadata": metadata, **({"ensemble": K} if ensemble is not None else {}),
              **_rules_header(net)}
    tensors = {}
    for l, layer in enumerate(params, start=1):
        for k in ("W", "b"):
            a = np.asarray(layer[k])
            if not np.all(np.isfinite(a)):
                raise ValueError(f"params[{l - 1}]['{k}'] (layer {l}): holds non-finite values.")
            tensors[f"{k}[{l}]"] = np.ascontiguousarray(a)
    _write(path, ext, header, tensors)


def _rules_header(net: Network) -> dict:
    """``{"rules": ...}``, the fingerprints of the registered activations and cost ``net``
    uses (:func:`jaxmlp.nn.costs.rule_fingerprints`), or ``{}`` when it uses built-in
    ones only (the header of such a model is as it was before fingerprints existed)."""
    from jaxmlp.nn.costs import rule_fingerprints

    rules = rule_fingerprints(net)
    return {"rules": rules} if rules else {}


def _check_rules(path: str, header: dict) -> None:
    """ValueError naming ``path`` when a registered rule of a name the file's ``"rules"``
    records is another definition than the one the model was saved with
    (:func:`jaxmlp.nn.costs.check_rule_fingerprints`). A file without the record
    (written before it existed, or using built-in rules only) is not checked."""
    from jaxmlp.nn.costs import check_rule_fingerprints

    if "rules" not in header:
        return
    try:
        check_rule_fingerprints(header["rules"])
    except ValueError as e:
        raise ValueError(f"path: {path!r}: {e}") from None


def _write(path: str, ext: str, header: dict, tensors: dict) -> None:
    """``tensors`` and the JSON ``header`` with its digest, written whole, then renamed.
    A .npz stores bfloat16 arrays as their uint16 bits, named in the header's ``"dtypes"``
    (:func:`_decode`); the digest is of the arrays as given."""
    if ext == ".npz":
        bf16 = sorted(k for k, a in tensors.items() if a.dtype == _bfloat16())
        if bf16:
            header["dtypes"] = {k: "bfloat16" for k in bf16}
    header["sha256"] = _digest(header, tensors)  # checked by load: damage is refused
    if ext == ".npz":
        tensors = {k: a.view(np.uint16) if k in header.get("dtypes", {}) else a
                   for k, a in tensors.items()}
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
        with open(path, "rb") as f:
            start = f.read(8)
        if start[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.load would try pickle
            what = ("it is empty" if not start else
                    "it is a .safetensors file, not a .npz one: rename it to end in "
                    ".safetensors" if _safetensors_header(path) else
                    "it is not a zip archive, which a .npz file is")
            raise ValueError(f"path: cannot read {path!r} as a .npz file: {what}.")
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
        with open(path, "rb") as f:
            hint = ("; it looks like a .npz file: rename it to end in .npz"
                    if f.read(4) == b"PK\x03\x04" else "")
        raise ValueError(f"path: cannot read {path!r} as a .safetensors file "
                         f"({type(e).__name__}: {e}){hint}.") from None
    if "jaxmlp" not in meta:
        raise ValueError(f"path: {path!r} is a .safetensors file but not a jaxmlp export (no "
                         "'jaxmlp' entry in its metadata).")
    return arrays, meta["jaxmlp"]


def _safetensors_header(path: str) -> bool:
    """Whether the file starts as a .safetensors file does: an 8-byte little-endian length
    and a JSON object of that many bytes."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100_000_000:
                return False
            return isinstance(json.loads(f.read(n)), dict)
    except (OSError, ValueError):
        return False


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


def _read_file(path):
    """(path as str, arrays, header text) of an existing export file; TypeError / ValueError
    naming ``path`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}.")
    path = os.path.expanduser(os.fspath(path))
    ext = _format(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: file {path!r} does not exist.")
    arrays, text = _read(path, ext)
    return path, arrays, text


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
      damaged file) or is missing, or that was saved with another definition of a rule
      registered now under its name (its recorded fingerprint differs); TypeError for float64 parameters while 64-bit mode is off.
    """
    import jax
    import jax.numpy as jnp

    path, arrays, text = _read_file(path)
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
    arrays = _decode(path, header, arrays)
    if header.get("content") == _POSTERIOR:
        raise ValueError(f"path: {path!r} is a Laplace posterior (save_posterior), not a "
                         "model; read it with jaxmlp.data.export.load_posterior.")
    if version != FORMAT_VERSION:
        raise ValueError(f"path: {path!r} has format version {version}; this jaxmlp reads "
                         f"version {FORMAT_VERSION}.")
    try:
        net = Network(sizes=tuple(sizes), activations=tuple(activations), cost=cost)
    except (TypeError, ValueError) as e:
        hint = (" (register it first with jaxmlp.register_activation; predict.py: "
                "--register FILE.py)" if "activations" in str(e) else "")
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
            if a.shape != want[f"{k}[{l}]"] or not _floating(a.dtype):
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
    _check_rules(path, header)
    if K is not None:
        metadata = {**metadata, "ensemble": K}
    return net, params, metadata


# ----------------------------------------------------------------------------- Laplace posteriors


def _network_header(net: Network) -> dict:
    return {"sizes": list(net.sizes), "activations": list(net.activations), "cost": net.cost}


def save_posterior(path: Union[str, os.PathLike], posterior, *,
                   metadata: Optional[dict] = None) -> None:
    """Writes a Laplace posterior (:class:`jaxmlp.laplace.Posterior`, e.g. of
    :func:`jaxmlp.laplace.from_fit`) to ``path`` (.npz or .safetensors): its arrays
    (:meth:`~jaxmlp.laplace.Posterior.to_arrays`: the MAP, the curvature of its structure,
    the prior precision, temperature, noise scale and loss) bit for bit, and a header with
    :data:`POSTERIOR_FORMAT_VERSION`, the network, the structure, the prior's kind, n_data,
    JSON ``metadata`` and the sha256 of it all. ``train.py --laplace`` writes
    ``laplace.npz`` (:data:`POSTERIOR_FILE`) beside its ``model.npz``.

    Raises TypeError / ValueError, before writing anything, for a ``posterior`` that is not
    a Posterior, non-finite arrays, metadata that is not a JSON-serialisable dict, or
    another extension.
    """
    from jaxmlp.laplace.posterior import Posterior

    path, ext = _output_path(path)
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior: expected a jaxmlp.laplace.Posterior, got "
                        f"{type(posterior).__name__}.")
    metadata = _check_metadata(metadata)
    fields, tensors = posterior.to_arrays()
    for name, a in tensors.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"posterior: {name} holds non-finite values.")
    header = {"format_version": POSTERIOR_FORMAT_VERSION, "content": _POSTERIOR,
              "network": _network_header(posterior.net), "posterior": fields,
              "metadata": metadata, **_rules_header(posterior.net)}
    _write(path, ext, header, tensors)


def load_posterior(path: Union[str, os.PathLike], *, verify: bool = True):
    """The :class:`jaxmlp.laplace.Posterior` of a file written by :func:`save_posterior`,
    rebuilt by :meth:`~jaxmlp.laplace.Posterior.from_arrays` (arrays of the saved dtype,
    bit for bit): ``predictive``, ``functional_covariance``, ``log_marginal_likelihood``
    and ``sample`` give what the saved posterior gave.

    Raises ValueError naming the file for one that does not exist or cannot be read, is not
    a posterior (a model export, another file), has another format version, describes a
    network this process cannot build, whose digest does not match (a damaged file; checked
    first, with ``verify=True``) or whose arrays do not make a posterior of its network;
    TypeError for a float64 posterior while 64-bit mode is off.
    """
    import jax

    from jaxmlp.laplace.posterior import Posterior

    path, arrays, text = _read_file(path)
    try:
        header = json.loads(text)
        content = header.get("content")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"path: {path!r}: the posterior's description is damaged "
                         f"({e!r}).") from None
    if content != _POSTERIOR:
        what = ("a model export (jaxmlp.data.export.save)" if "network" in header
                else "not a jaxmlp file")
        raise ValueError(f"path: {path!r} is {what}, not a Laplace posterior "
                         "(jaxmlp.data.export.save_posterior; train.py --laplace writes "
                         f"{POSTERIOR_FILE}).")
    try:
        version, desc, fields = header["format_version"], header["network"], header["posterior"]
        sizes, activations, cost = desc["sizes"], desc["activations"], desc["cost"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"path: {path!r}: the posterior's description is damaged "
                         f"({e!r}).") from None
    if version != POSTERIOR_FORMAT_VERSION:
        raise ValueError(f"path: {path!r} is a posterior of format version {version!r}; this "
                         f"jaxmlp reads version {POSTERIOR_FORMAT_VERSION}.")
    arrays = _decode(path, header, arrays)
    if verify:
        if _digest(header, arrays) != header.get("sha256"):
            raise ValueError(f"path: {path!r}: its arrays or header do not match the digest "
                             "recorded when it was written (sha256): the file is damaged.")
    try:
        net = Network(sizes=tuple(sizes), activations=tuple(activations), cost=cost)
    except (TypeError, ValueError) as e:
        raise ValueError(f"path: {path!r} describes a network this process cannot build: "
                         f"{e}") from None
    _check_rules(path, header)
    if any(a.dtype == np.float64 for a in arrays.values()) and not jax.config.jax_enable_x64:
        raise TypeError(f"path: {path!r} holds a float64 posterior; turn on 64-bit mode "
                        "first (jax.config.update('jax_enable_x64', True)).")
    try:
        return Posterior.from_arrays(net, fields, arrays)
    except (TypeError, ValueError) as e:
        raise ValueError(f"path: {path!r}: not a usable posterior: {e}") from None


# ----------------------------------------------------------------------------- one-call loading


def _batch_first_hint(shape: tuple, n: int) -> str:
    """The fix for rows of the wrong shape, when there is an obvious one: a transposed
    (n, n_samples) array, or one row as a vector of n."""
    if len(shape) == 2 and shape[0] == n and shape[1] != n:
        return "; rows are examples: pass X.T"
    if len(shape) == 1 and shape[0] == n:
        return "; one row is (1, n_features): pass x[None, :] (or x.reshape(1, -1))"
    return ""


def _one_row_or_records(pd, rows, feature_columns):
    """``rows`` as a DataFrame when it names its columns: a dict of one row (its values
    scalars), a dict of columns (its values lists of one length), a pandas Series (one row,
    its index the column names), or a list of dicts (one a row); anything else unchanged.
    A dict mixing scalars and lists is a TypeError saying what to pass."""
    from jaxmlp.data.tabular import names_text

    def scalar(v):
        return np.ndim(v) == 0

    if isinstance(rows, pd.Series):
        return pd.DataFrame([rows.to_dict()])
    if isinstance(rows, dict):
        values = list(rows.values())
        if all(scalar(v) for v in values):
            return pd.DataFrame([rows])
        if not any(scalar(v) for v in values):
            try:
                return pd.DataFrame(rows)
            except ValueError as e:
                raise ValueError(f"rows: a dict of columns needs columns of one length "
                                 f"({e}).") from None
        raise TypeError(f"rows: expected a DataFrame, a list of dicts (one a row), a dict of "
                        f"one row (one value a column) or a dict of columns (one list a "
                        f"column) of the feature columns {names_text(feature_columns)}; got "
                        "a dict mixing single values and lists.")
    if isinstance(rows, (list, tuple)) and rows and all(isinstance(r, dict) for r in rows):
        return pd.DataFrame(list(rows))
    return rows


class Model:
    """A trained network with its preprocessing: predictions for rows, batch-first.

    ``model.predict(rows)`` / ``model.predict_proba(rows)`` take a pandas DataFrame with the
    training table's feature columns (any order; target columns ignored), a list of dicts
    (one a row), a dict of one row or of columns, a pandas Series (one row), or an array
    (n_samples, n_features) of those columns in training order (or, for a model saved
    without preprocessing, the network's n[0] inputs). An ensemble's members are averaged
    ((1/K) sum_k A[L]_k).

    With a Laplace posterior (``train.py --laplace``'s ``laplace.npz``, read by
    :func:`load_model` from a run folder; or ``posterior=``), ``predict_proba(rows,
    laplace=True)`` gives the GLM probit predictive (LA10), (LA11) and ``predict(rows,
    return_std=True)`` a regression's predictive mean and standard deviation in the
    target's units.

    Attributes: ``net``, ``params``, ``preprocessing`` (a
    :class:`jaxmlp.data.tabular.Preprocessing`, or None), ``metadata``, ``ensemble`` (K or
    None), ``task``, ``classes_`` (classification: the classes in the target column's type,
    ints for a column of integers and for the bundled datasets (scikit-learn's targets), else
    the class names; multilabel: the labels), ``path`` (the folder or file :func:`load_model` read, or None), ``posterior`` (the
    :class:`jaxmlp.laplace.Posterior`, or None).
    """

    def __init__(self, net: Network, params, metadata: Optional[dict] = None, *,
                 posterior=None, path: Optional[str] = None):
        """``posterior``: None, a :class:`jaxmlp.laplace.Posterior` of ``net`` at ``params``,
        or the path of a file written by :func:`save_posterior` (read, and checked to be
        the posterior of ``params``, when first used). ``path``: where the model came from
        (named in messages)."""
        from jaxmlp.data.tabular import Preprocessing

        self.net, self.params, self.metadata = net, params, dict(metadata or {})
        self.path = None if path is None else os.fspath(path)
        self.ensemble = self.metadata.get("ensemble")
        prep = self.metadata.get("preprocessing")
        self.preprocessing = (None if prep is None else
                              _bundled_class_values(Preprocessing.from_dict(prep), self.metadata))
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
        if posterior is not None and not isinstance(posterior, (str, os.PathLike)):
            self._check_posterior(posterior, "posterior")
        self._posterior = posterior

    def __repr__(self) -> str:
        k = f", ensemble of {self.ensemble}" if self.ensemble else ""
        return f"Model({self.task}, network {'-'.join(map(str, self.net.sizes))}{k})"

    def inputs(self, rows) -> np.ndarray:
        """The network's standardised X, (n[0], m), for ``rows`` (see the class docstring)."""
        if hasattr(rows, "__len__") and len(rows) == 0:
            raise ValueError("X: expected at least one row to predict, got none (0 rows).")
        prep = self.preprocessing
        dtype = np.dtype(self.params[0]["W"].dtype)  # the values must fit the network's dtype
        if prep is None:
            n0 = self.net.sizes[0]
            if isinstance(rows, (dict, list, tuple)) and (
                    isinstance(rows, dict) or any(isinstance(r, dict) for r in rows)):
                raise TypeError(f"rows: this model was saved without preprocessing, so it has "
                                f"no column names; expected numbers, an array (n_samples, "
                                f"{n0}) of the network's inputs in order, got "
                                f"{'a dict' if isinstance(rows, dict) else 'a list of dicts'}.")
            try:
                X = np.asarray(rows, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise TypeError(f"rows: this model was saved without preprocessing; expected "
                                f"numbers, an array (n_samples, {n0}) of the network's inputs, "
                                f"got {type(rows).__name__} ({e}).") from None
            if X.ndim != 2 or X.shape[1] != self.net.sizes[0]:
                raise ValueError(f"X: expected an array (n_samples, {self.net.sizes[0]}), "
                                 f"got shape {X.shape}{_batch_first_hint(X.shape, n0)}.")
            bad = np.argwhere(~np.isfinite(X) | (np.abs(X) > np.finfo(dtype).max))
            if bad.size:
                r, c = (int(i) for i in bad[0])
                raise ValueError(f"X: row {r}, column {c} holds {X[r, c]:g}; expected finite "
                                 f"numbers within the {dtype.name} network's range.")
            return X.T
        from jaxmlp.data import tabular

        pd = tabular.pandas_module()
        rows = _one_row_or_records(pd, rows, prep.feature_columns)
        if not isinstance(rows, pd.DataFrame):
            # lists of mixed text and numbers stay objects (np.asarray would turn a missing
            # NaN into the text 'nan' beside a text column); infer_objects types the columns
            A = rows if isinstance(rows, np.ndarray) else np.asarray(rows, dtype=object)
            n = len(prep.feature_columns)
            if A.ndim != 2 or A.shape[1] != n:
                raise ValueError(f"X: expected a DataFrame or an array (n_samples, {n}) of the "
                                 f"feature columns {tabular.names_text(prep.feature_columns)}, "
                                 f"got shape {A.shape}{_batch_first_hint(A.shape, n)}.")
            rows = pd.DataFrame(A, columns=list(prep.feature_columns))
            rows = rows.infer_objects()
        return tabular.transform(prep, rows, dtype=dtype)

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

    # ------------------------------------------------------------------------- Laplace

    def _check_posterior(self, la, source: str) -> None:
        """ValueError naming ``source`` unless ``la`` is a posterior of this network at
        exactly these params (same dtype, same bits)."""
        from jaxmlp.laplace.posterior import Posterior

        if not isinstance(la, Posterior):
            raise TypeError(f"posterior: expected a jaxmlp.laplace.Posterior or a file path, "
                            f"got {type(la).__name__}.")
        if self.ensemble is not None:
            raise ValueError(f"{source}: the model is an ensemble of {self.ensemble}; a "
                             "Laplace posterior is one network's.")
        same = la.net == self.net and all(
            np.asarray(a[k]).dtype == np.asarray(b[k]).dtype
            and np.array_equal(np.asarray(a[k]), np.asarray(b[k]))
            for a, b in zip(la.params, self.params) for k in ("W", "b"))
        if not same:
            raise ValueError(f"{source}: the posterior is not the model's: its network or MAP "
                             f"parameters differ from those of {self.path or 'the model'} (a "
                             "posterior left by an earlier run, or of another model); refit "
                             "it (train.py --laplace) or remove it.")

    @property
    def posterior(self):
        """The :class:`jaxmlp.laplace.Posterior` saved with the model, or None (a file is
        read and checked on first use: ValueError naming it when damaged or not this
        model's)."""
        if isinstance(self._posterior, (str, os.PathLike)):
            file = os.fspath(self._posterior)
            la = load_posterior(file)
            self._check_posterior(la, f"path: {file!r}")
            self._posterior = la
        return self._posterior

    def _laplace(self, caller: str):
        """The posterior, or ValueError naming where it was looked for."""
        la = self.posterior
        if la is not None:
            return la
        if self.path is not None and os.path.isdir(self.path):
            where = f"the folder {self.path!r} holds no {POSTERIOR_FILE}"
        elif self.path is not None:
            where = (f"{self.path!r} is a model file (a posterior is read from a run folder's "
                     f"{POSTERIOR_FILE}: load the folder)")
        else:
            where = "this Model was built without one (Model(..., posterior=...))"
        raise ValueError(f"{caller}: the Laplace predictive needs the posterior saved with the "
                         f"model; {where}. Train with `python experiments/train.py --laplace "
                         "kron` (or diag, full, last_layer), or save one with "
                         "jaxmlp.data.export.save_posterior.")

    def _laplace_outputs(self, rows, caller: str):
        """(mean or probabilities, variance or None) of the GLM predictive, batch-first
        (n_samples, n[L]), float64."""
        import jax.numpy as jnp

        la = self._laplace(caller)
        X = jnp.asarray(self.inputs(rows), dtype=la.temperature.dtype)
        out = la.predictive(X)  # (LA10), (LA11): probit; regression (mean, variance)
        if isinstance(out, tuple):
            return tuple(np.asarray(a, dtype=np.float64).T for a in out)
        return np.asarray(out, dtype=np.float64).T, None

    # ------------------------------------------------------------------------- predictions

    def predict_proba(self, rows, *, laplace: bool = False) -> np.ndarray:
        """(n_samples, classes): each class's probability (columns in ``classes_`` order);
        multilabel: (n_samples, labels), each label's probability.

        ``laplace=True``: the GLM probit predictive of the saved posterior (LA11),
        softmax(mu / sqrt(1 + pi/8 Sigma_cc)) or sigmoid(mu / sqrt(1 + pi/8 Sigma_jj)) with
        Sigma = J P^{-1} J^T (LA10); ValueError naming the folder when the model has no
        posterior."""
        if not isinstance(laplace, bool):
            raise TypeError(f"laplace: expected True or False, got {laplace!r}.")
        if self.task == "regression":
            raise ValueError("predict_proba: a regression model has no class probabilities; "
                             "use predict (predict(rows, return_std=True): the Laplace "
                             "predictive's mean and standard deviation).")
        A = (self._laplace_outputs(rows, "predict_proba")[0] if laplace
             else self.outputs(rows))
        if self.task == "classification" and A.shape[1] == 1:
            return np.concatenate([1.0 - A, A], axis=1)
        return A

    def predict(self, rows, *, laplace: bool = False, return_std: bool = False):
        """Classification: (n_samples,) class names; multilabel: (n_samples, labels) of 0/1;
        regression: values in the target's units, (n_samples,) for one target column, else
        (n_samples, targets).

        ``laplace=True``: from the Laplace predictive (classification: the class of largest
        probit probability, which can differ from the MAP's argmax; regression: its mean,
        the MAP's output). ``return_std=True`` (regression; implies ``laplace``):
        ``(mean, std)`` of the same shape, std = sqrt(diag J P^{-1} J^T + sigma_noise^2)
        (LA11) times the target's standard deviation of the preprocessing (the variance
        scales by its square), as scikit-learn's ``GaussianProcessRegressor.predict``."""
        for name, v in (("laplace", laplace), ("return_std", return_std)):
            if not isinstance(v, bool):
                raise TypeError(f"{name}: expected True or False, got {v!r}.")
        if return_std and self.task != "regression":
            raise ValueError(f"return_std: a {self.task} model has no predictive standard "
                             "deviation; use predict_proba(rows, laplace=True).")
        if self.task == "classification":
            return self.classes_[np.argmax(self.predict_proba(rows, laplace=laplace), axis=1)]
        if self.task == "multilabel":
            return (self.predict_proba(rows, laplace=laplace) >= 0.5).astype(np.int64)
        var = None
        if laplace or return_std:
            Y, var = self._laplace_outputs(rows, "predict")
        else:
            Y = self.outputs(rows)
        scale = np.ones(Y.shape[1])
        if self.preprocessing is not None:
            from jaxmlp.data.tabular import inverse_target

            Y = inverse_target(self.preprocessing, Y.T).T
            if self.preprocessing.target_std is not None:
                scale = np.asarray(self.preprocessing.target_std, dtype=np.float64)
        squeeze = (lambda a: a[:, 0]) if Y.shape[1] == 1 else (lambda a: a)  # noqa: E731
        if not return_std:
            return squeeze(Y)
        return squeeze(Y), squeeze(np.sqrt(var) * scale)


def _bundled_class_values(prep, metadata: dict):
    """``prep`` with the integer classes of a bundled dataset when it is a record written
    before they were stored (``class_values`` None): the preprocessing of
    :func:`jaxmlp.data.tabular.bundled_preprocessing` (the class names and feature columns of
    ``metadata["dataset"]``, or of an orbax checkpoint's ``config["dataset"]`` without
    ``--data``), so such a model predicts 0 ... 9 as a new one does, not '0' ... '9'. Any other
    record is returned as it is."""
    from jaxmlp.data import datasets

    config = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    name = metadata.get("dataset", None if config.get("data") else config.get("dataset"))
    if (prep.task != "classification" or prep.class_values is not None or prep.categories
            or not isinstance(name, str) or name not in datasets.CLASSES):
        return prep
    names, values = datasets.CLASSES[name]
    if (tuple(prep.class_names) != names
            or tuple(prep.feature_columns) != datasets.feature_names(name)):
        return prep
    return prep._replace(class_values=values)


def load_model(path: Union[str, os.PathLike]) -> Model:
    """The trained model in ``path`` as a :class:`Model` (``predict``, ``predict_proba``).

    ``path``: a folder written by ``experiments/train.py`` (its ``model.npz``; and its
    ``laplace.npz`` when the run had ``--laplace``: the Model's ``posterior``, read and
    checked when first used) or a file written by :func:`save` (.npz or .safetensors).
    ValueError naming the path when it holds no model or the model's metadata is damaged,
    or when the model (the folder's, or the file named) sits in a run folder whose
    results.json records other parameters (:func:`check_model_of_run`).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder or file path, got {type(path).__name__}.")
    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: {path!r} does not exist (relative to "
                                f"{os.getcwd()!r}); expected a run folder holding model.npz, "
                                "or a model file ending in .npz or .safetensors.")
    source, posterior = path, None
    if os.path.isdir(path):
        file = os.path.join(path, "model.npz")
        if not os.path.isfile(file):
            raise ValueError(f"path: the folder {path!r} holds no model.npz (train.py writes "
                             "it when a run completes).")
        if os.path.exists(os.path.join(path, POSTERIOR_FILE)):
            posterior = os.path.join(path, POSTERIOR_FILE)
        path = file
    net, params, metadata = load(path)
    # A model in a run folder (given as the folder or as the file): the run's results.json
    # must record it. A file with no results.json of a run beside it is not checked.
    check_model_of_run(path, params)
    try:
        return Model(net, params, metadata, posterior=posterior, path=source)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"path: {path!r}: damaged preprocessing metadata ({e}).") from None


def check_model_of_run(model_file: str, params) -> None:
    """ValueError when the results.json beside ``model_file`` (a train.py run folder) records
    other parameters (its ``final_params_sha256``) than ``params``: a model left by an
    earlier run, whose predictions would not be those of the run reported there. Nothing is
    checked for a file outside a run folder, nor for a file of another name than the run's
    ``model.npz`` (a copy exported beside it)."""
    from jaxmlp.train.checkpoint import params_digest

    if os.path.basename(model_file) != "model.npz":
        return
    results = os.path.join(os.path.dirname(os.path.abspath(model_file)), "results.json")
    try:
        with open(results) as f:
            res = json.load(f)
        want = res["final_params_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a run folder (an exported file somewhere)
    got = params_digest(params)
    if got != want:
        raise ValueError(
            f"path: {model_file} is not the model of the run whose results.json is beside it "
            f"(status {res.get('status')!r}; params sha256 {got[:16]}... in the model, "
            f"{str(want)[:16]}... in results.json): it was left by an earlier run. Retrain, or "
            "pass an exported model file that is not in a run folder.")
