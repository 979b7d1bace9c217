"""jaxmlp.load_model -> Model in one process: predict / predict_proba on DataFrames and
batch-first arrays against a NumPy forward pass and the preprocessing written out by hand
(classification with a categorical column, binary, multilabel, regression in the target's
units, an ensemble's average), and the refusals of export.save / load / load_model (argument
named, expected vs given): damaged headers, a missing or wrong digest, float64 without 64-bit
mode, files that are not exports, no safetensors package."""

import json
import sys

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp.data import export
from jaxmlp.data.tabular import Preprocessing

pd = pytest.importorskip("pandas")

RNG = np.random.default_rng(7)


def _params(sizes, K=None):
    lead = () if K is None else (K,)
    return [{"W": RNG.normal(size=lead + (n, n_prev)), "b": RNG.normal(size=lead + (n,))}
            for n_prev, n in zip(sizes[:-1], sizes[1:])]


def _forward(params, acts, X):
    """A[L] (n[L], m) of (F1)-(F2) in NumPy, X (n[0], m)."""
    A = X
    for layer, g in zip(params, acts):
        Z = np.asarray(layer["W"]) @ A + np.asarray(layer["b"])[:, None]
        if g == "tanh":
            A = np.tanh(Z)
        elif g == "sigmoid":
            A = 1 / (1 + np.exp(-Z))
        elif g == "softmax":
            E = np.exp(Z - Z.max(axis=0))
            A = E / E.sum(axis=0)
        else:
            assert g == "linear"
            A = Z
    return A


CLS_NET = jaxmlp.Network((4, 5, 3), ("tanh", "softmax"), "categorical_cross_entropy")


def test_ensemble_save_refuses_params_that_are_not_k_members(tmp_path):
    single = _params(CLS_NET.sizes)
    for params, K in ((_params(CLS_NET.sizes, 4), 3), (_params(CLS_NET.sizes, 2), 3)):
        with pytest.raises(ValueError, match=rf"params: expected {K} members stacked along axis 0 "
                                             rf"\(ensemble={K}\)"):
            export.save(tmp_path / "e.npz", params, CLS_NET, ensemble=K)
    with pytest.raises(ValueError, match="params: expected ensemble parameters stacked"):
        export.save(tmp_path / "e.npz", [{"W": single[0]["W"], "b": single[0]["b"]},
                                         single[1]], CLS_NET, ensemble=2)
    with pytest.raises(ValueError, match="ensemble: expected a positive integer"):
        export.save(tmp_path / "e.npz", single, CLS_NET, ensemble=0)
    assert not (tmp_path / "e.npz").exists()
