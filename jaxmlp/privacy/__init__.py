"""Differential privacy: the DP-SGD gradient from one sweep, Poisson sampling, accounting.

``dpsgd``: the clipped, noised gradient (rules (Q2), (Q5)), :class:`DPSGD` (a run's
settings), Poisson sampling with fixed shapes and the accountant (dp-accounting).
``threefry``: JAX's threefry normals by an unrolled hash that XLA fuses with the addition.
The private training epoch is :func:`jaxmlp.train.make_dp_train_epoch`.
"""

from jaxmlp.privacy import threefry
from jaxmlp.privacy.dpsgd import (
    ACCOUNTANTS, GIVEN_OVERFLOW_PROBABILITY, OVERFLOW_PROBABILITY, PLD_GRID, RDP_ORDERS, SIGMA_RANGE, DPGradient, DPSGD, DPStepMetrics, calibrate_noise, calibrate_run, check_dp_args,
    check_dpsgd, check_expected_batch, check_sampling_rate, default_steps_per_epoch, dp_gradient_kernel,
    add_noise, dp_value_and_grad, epsilon, make_dp_grad_fn, overflow_probability, padded_batch_size,
    poisson_batch, privacy_report, total_clip,
)

__all__ = [
    "ACCOUNTANTS", "DPGradient", "GIVEN_OVERFLOW_PROBABILITY", "OVERFLOW_PROBABILITY", "PLD_GRID", "RDP_ORDERS",
    "SIGMA_RANGE", "add_noise", "DPSGD", "DPStepMetrics", "calibrate_noise", "calibrate_run",
    "check_dp_args", "check_dpsgd", "check_expected_batch", "check_sampling_rate", "default_steps_per_epoch",
    "dp_gradient_kernel", "dp_value_and_grad", "epsilon", "make_dp_grad_fn",
    "overflow_probability", "padded_batch_size", "poisson_batch", "privacy_report", "threefry", "total_clip",
]
