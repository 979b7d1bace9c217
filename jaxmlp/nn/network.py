"""The static description of a network: layer sizes, activations and cost.

A :class:`Network` is an immutable, hashable value, validated when built, so it can
be passed as a static argument of ``jax.jit`` (``static_argnums``/``static_argnames``)
or closed over. It holds no arrays: the parameters are a separate pytree
(``jaxmlp.init_params``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from jaxmlp.nn.activations import ACTIVATIONS, Activation, get_activation
from jaxmlp.nn.costs import Cost, get_cost
from jaxmlp.nn.scalars import positive_int


@dataclasses.dataclass(frozen=True)
class Network:
    """A feedforward network: n[0] inputs, L weighted layers, one cost.

    Arguments:
      sizes: ``(n[0], n[1], ..., n[L])``, positive integers, L >= 1.
      activations: ``(g[1], ..., g[L])``, names from ``jaxmlp.ACTIVATIONS``; a
        single string is used for every layer.
      cost: one of ``"binary_cross_entropy"``, ``"categorical_cross_entropy"``,
        ``"multilabel_cross_entropy"``, ``"mean_squared_error"``.

    Example::

        net = jaxmlp.Network(sizes=(64, 128, 10), activations=("relu", "softmax"),
                             cost="categorical_cross_entropy")
    """

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    cost: str

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise TypeError(
                f"sizes: expected a sequence of positive integers (n[0], ..., n[L]), "
                f"got {sizes!r}."
            )
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"sizes: expected at least two entries (n[0], n[1]) for one weighted layer, "
                f"got {sizes!r}."
            )
        sizes = tuple(positive_int(f"sizes[{l}]", n) for l, n in enumerate(sizes))
        L = len(sizes) - 1

        activations = self.activations
        if isinstance(activations, str):
            activations = (activations,) * L
        if not isinstance(activations, Sequence):
            raise TypeError(f"activations: expected a sequence of {L} names, got {activations!r}.")
        activations = tuple(activations)
        if len(activations) != L:
            raise ValueError(
                f"activations: expected {L} names (one per weighted layer, sizes has "
                f"{len(sizes)} entries), got {len(activations)}: {activations!r}."
            )
        for l, name in enumerate(activations, start=1):
            if not isinstance(name, str) or name not in ACTIVATIONS:
                raise ValueError(
                    f"activations[{l - 1}] (layer {l}): expected one of {sorted(ACTIVATIONS)}, "
                    f"got {name!r}."
                )
            if name == "softmax" and sizes[l] == 1:
                raise ValueError(
                    f"activations[{l - 1}]: softmax needs at least 2 units, but layer {l} has "
                    f"n[{l}] = 1 (softmax of one unit is constant 1); use sigmoid instead."
                )
        cost = get_cost(self.cost)
        nL = sizes[-1]
        if nL < cost.min_outputs or (cost.max_outputs is not None and nL > cost.max_outputs):
            want = (
                f"n[L] == {cost.min_outputs}"
                if cost.max_outputs == cost.min_outputs
                else f"n[L] >= {cost.min_outputs}"
            )
            hint = {
                "binary_cross_entropy": " (use multilabel_cross_entropy for several "
                "yes/no outputs, categorical_cross_entropy for classes)",
                "categorical_cross_entropy": " (use binary_cross_entropy with a sigmoid "
                "output for two classes)",
            }.get(cost.name, "")
            raise ValueError(f"cost: {cost.name!r} needs {want}, got n[L] = {nL}{hint}.")
        out = get_activation(activations[-1])
        if cost.needs_unit_range and not out.unit_range:
            raise ValueError(
                f"activations[-1]: cost {cost.name!r} takes log A[L] and needs outputs in "
                f"(0, 1) (sigmoid or softmax), got {out.name!r}."
            )
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "activations", activations)

    @property
    def num_layers(self) -> int:
        """L, the number of weighted layers."""
        return len(self.sizes) - 1

    @property
    def layer_activations(self) -> tuple[Activation, ...]:
        """``(g[1], ..., g[L])`` as :class:`Activation` records."""
        return tuple(get_activation(a) for a in self.activations)

    @property
    def cost_fn(self) -> Cost:
        return get_cost(self.cost)

    @property
    def fused(self) -> bool:
        """True when (g[L], cost) is a canonical pair: the seed is dZ[L] = (1/m)(A[L] - Y)."""
        return self.activations[-1] == self.cost_fn.canonical

    @property
    def num_params(self) -> int:
        """Number of scalar parameters: sum over l of n[l] (n[l-1] + 1)."""
        return sum(n * (p + 1) for p, n in zip(self.sizes[:-1], self.sizes[1:]))

    def param_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """``[{"W": (n[l], n[l-1]), "b": (n[l],)} for l = 1..L]``."""
        return [
            {"W": (n, p), "b": (n,)} for p, n in zip(self.sizes[:-1], self.sizes[1:])
        ]
