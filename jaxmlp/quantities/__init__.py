"""Quantities read off the sweep: each a short rule over (dZ[l], A[l-1]).

``first_order``: gradient, per-example gradients and norms, sum of squares, variance,
clipped gradient (Q1)-(Q5). ``curvature``: GGN / Hessian diagonals, Kronecker factors,
GGN- and Hessian-vector products (H1)-(H10).
"""

from jaxmlp.quantities import curvature
from jaxmlp.quantities.curvature import (
    ggn_diag, ggn_vp, hessian_diag, hvp, kfac_factors, per_example_ggn_diag,
)
from jaxmlp.quantities.first_order import (
    METHODS, PerExampleNorms, PerExampleStats, clipped_gradient, gradient, map_column_blocks,
    norms_from_sq, per_example, per_example_grads, per_example_norms, per_example_stats,
    sq_norms, sum_of_squares, variance,
)

__all__ = [
    "METHODS", "PerExampleNorms", "PerExampleStats", "clipped_gradient", "curvature",
    "ggn_diag", "ggn_vp", "gradient", "hessian_diag", "hvp", "kfac_factors",
    "map_column_blocks", "norms_from_sq", "per_example", "per_example_ggn_diag",
    "per_example_grads", "per_example_norms", "per_example_stats", "sq_norms",
    "sum_of_squares", "variance",
]
