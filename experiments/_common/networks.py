"""The benchmarks' networks, data and matrix products; compiled-HLO summaries; frameworks.

* :func:`mlp`, :func:`synthetic_data`: the network (relu hidden layers, softmax output,
  categorical cross-entropy) and the random column-major data every speed script uses;
* :class:`Product`, :func:`matrix_products`, :func:`step_flops`: the matrix products of one
  training step, (F1) Z[l] = W[l] A[l-1], (B1) dW[l] = dZ[l] A[l-1]^T and (B3)
  dA[l-1] = W[l]^T dZ[l] (l >= 2), 2 * rows * inner * cols FLOPs each;
* :func:`hlo_summary`: what a compiled step does with its products (``compiled.as_text()``);
* :func:`import_torch`, :func:`available`, :func:`make_matmul_xla`: optional frameworks and
  the float32 matmul peak.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

__all__ = ["SHAPES", "Product", "available", "hlo_summary", "import_torch", "make_matmul_xla",
           "matrix_products", "mlp", "step_flops", "synthetic_data"]

#: The benchmark suite: name -> (layer sizes, batch size m).
SHAPES = {
    "tiny": ((64, 128, 10), 128),
    "medium": ((784, 512, 512, 10), 256),
    "large": ((1024, 2048, 2048, 1024), 1024),
    "deep-narrow": ((100,) + (100,) * 8 + (10,), 64),
}


@dataclasses.dataclass(frozen=True)
class Product:
    """One matrix product of a training step: ``rows x inner`` times ``inner x cols``."""

    equation: str
    layer: int
    rows: int
    inner: int
    cols: int

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.inner * self.cols


def matrix_products(sizes: tuple[int, ...], m: int) -> list[Product]:
    """Every matrix product of one step of an MLP with layer sizes ``sizes`` on m columns.

    (F1) Z[l] = W[l] A[l-1]:       (n[l] x n[l-1]) (n[l-1] x m), l = 1..L
    (B1) dW[l] = dZ[l] A[l-1]^T:   (n[l] x m) (m x n[l-1]),       l = 1..L
    (B3) dA[l-1] = W[l]^T dZ[l]:   (n[l-1] x n[l]) (n[l] x m),    l = 2..L
    """
    L = len(sizes) - 1
    out = []
    for l in range(1, L + 1):
        out.append(Product("F1", l, sizes[l], sizes[l - 1], m))
    for l in range(L, 0, -1):
        out.append(Product("B1", l, sizes[l], m, sizes[l - 1]))
        if l > 1:
            out.append(Product("B3", l, sizes[l - 1], sizes[l], m))
    return out


def step_flops(sizes: tuple[int, ...], m: int) -> int:
    """Total matrix-product FLOPs of one training step."""
    return sum(p.flops for p in matrix_products(sizes, m))


def synthetic_data(sizes, m, seed=0):
    """X (n[0], m) standard normal float32, Y (n[L], m) one-hot columns of uniform labels,
    and the labels (m,), drawn with NumPy from ``seed``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((sizes[0], m)).astype(np.float32)  # (n[0], m)
    labels = rng.integers(0, sizes[-1], m)
    Y = np.eye(sizes[-1], dtype=np.float32)[:, labels]  # (n[L], m) one-hot columns
    return X, Y, labels


def mlp(sizes):
    """The benchmark network of layer sizes ``sizes``: relu hidden layers, softmax output,
    categorical cross-entropy (a :class:`jaxmlp.Network`)."""
    import jaxmlp

    L = len(sizes) - 1
    return jaxmlp.Network(sizes, ("relu",) * (L - 1) + ("softmax",), "categorical_cross_entropy")


def hlo_summary(text: str) -> dict:
    """What the compiled HLO of a step does with its matrix products.

    From ``compiled.as_text()``: the entry computation's instructions, and every dot with
    its dimension numbers and where it runs: inside a YNNPACK fusion (``__ynn_fusion``) or as
    a plain ``dot`` instruction (XLA's Eigen dot runtime).
    """
    import re

    comps, name = {}, None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%(\S+) ", line)
        if head and line.rstrip().endswith("{"):
            name = "ENTRY" if head.group(1) else head.group(2)
            comps[name] = []
        elif name and line.startswith("  "):
            comps[name].append(line.strip())
    ynn = {m.group(1) for line in comps.get("ENTRY", []) if "__ynn_fusion" in line
           for m in [re.search(r"calls=%([\w.\-]+)", line)] if m}
    dots = []
    for comp, lines in comps.items():
        for line in lines:
            if " dot(" in line:
                where = ("YNNPACK fusion" if comp in ynn else
                         "plain dot (Eigen)" if comp == "ENTRY" else f"fusion {comp}")
                shape = line.split(" = ", 1)[1].split(" dot(")[0].strip()
                dims = re.findall(r"(lhs_contracting_dims=\{\d*\}, rhs_contracting_dims=\{\d*\})", line)
                dots.append({"result": shape, "dims": dims[0] if dims else "", "runs_in": where})
    entry = comps.get("ENTRY", [])
    # a reduction inside the same fusion as a dot: the slow YNNPACK dot + reduce pattern
    # (docs/performance.md, "Softmax output"); 0 for both variants on every shape
    dot_reduce = sorted(c for c, lines in comps.items()
                        if any(" dot(" in l for l in lines) and any(" reduce(" in l for l in lines))
    return {"entry_instructions": len(entry), "fusions": sum(" fusion(" in l for l in entry),
            "dots": dots, "dot_reduce_fusions": dot_reduce}


def import_torch():
    """torch, its OpenMP threads waiting passively (OMP_WAIT_POLICY=PASSIVE unless set): on a
    shared, oversubscribed machine spinning waiters starve the working threads and a tiny
    step took 250 ms instead of 0.5 ms. Must run before torch's first import."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


def make_matmul_xla(N, dtype="float32"):
    """N x N matmul; for a low-precision dtype, operands in dtype and float32 result."""
    import jax
    import jax.numpy as jnp

    A = jax.random.normal(jax.random.PRNGKey(1), (N, N), jnp.float32).astype(dtype)
    B = jax.random.normal(jax.random.PRNGKey(2), (N, N), jnp.float32).astype(dtype)
    f = jax.jit(lambda A, B: jnp.matmul(A, B, preferred_element_type=jnp.float32))
    return lambda: f(A, B)


def available(variant: str) -> bool:
    """Whether the optional framework of ``variant`` can be imported."""
    mod = {"torch": "torch", "equinox": "equinox"}.get(variant)
    if mod is None:
        return True
    import importlib.util

    return importlib.util.find_spec(mod) is not None
