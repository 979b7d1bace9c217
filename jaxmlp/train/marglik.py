"""The prior precision learned during training: :func:`marglik_training`.

Immer et al. (2021), "Scalable marginal likelihood estimation for model selection in deep
learning", Algorithm 1 (laplace-torch's ``marglik_training``): the network is trained on the
negative log joint, whose prior term is a weight decay, and every ``frequency`` epochs (from
epoch ``burnin``) the Laplace posterior at the current parameters (LA1)-(LA5) gives the
evidence's prior precision (``hypersteps`` steps of the ascent on (LA6) with the gradient
(LA8), (LA9): :func:`jaxmlp.laplace.optimize_prior_precision`), which becomes the weight
decay of the next epochs.

The weight decay of a prior precision delta (LA2): the negative log joint
sum_i L_i / (T sigma^2) + (delta / 2) ||theta||^2, times T sigma^2 / n, is the mean cost
J (F3) plus (lambda / 2) ||theta||^2 with lambda = delta T sigma^2 / n, on every parameter,
W and b (the prior of (LA1) covers both; ``jaxmlp.train.make_optimizer``'s weight decay
covers W only); with one prior per layer, lambda_l = delta_l T sigma^2 / n on layer l.

The epochs are the library's: :func:`jaxmlp.train.make_train_epoch` with the optimizer
``optax.chain(prior_decay(), optimizer)``. The gradient of J is the recurrences' (B1)-(B4);
:func:`prior_decay` adds lambda_l theta to layer l's W and b gradients before ``optimizer``
sees them, as laplace-torch adds the prior's gradient to the loss's. lambda lives in the
optimizer state (:class:`PriorDecayState`, an (L,) array), and a new prior is written into
it between epochs: a traced value, so the epoch is compiled once (and reused by later calls
with the same ``optimizer``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp.laplace import STRUCTURES, Posterior, laplace, optimize_prior_precision
from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.nn.scalars import real_number
from jaxmlp.train.metrics import cost_and_metrics_kernel
from jaxmlp.train.monitor import DEFAULT_EXPLODE_FACTOR, all_finite
from jaxmlp.train.optimizers import check_optimizer
from jaxmlp.train.step import make_train_epoch, split_key

__all__ = ["MarglikResult", "PriorDecayState", "marglik_training", "prior_decay"]


class MarglikResult(NamedTuple):
    """What :func:`marglik_training` returns.

    params: the trained parameters [{"W", "b"}, ...] (those of the last epoch).
    posterior: the Laplace posterior at ``params`` with the prior precision the last epochs
      trained with (their weight decay lambda = delta T sigma^2 / n, module docstring).
    history: NumPy arrays: ``"epoch"`` (k,) the epochs after which the prior was updated,
      ``"prior_precision"`` (k,) or (k, L) the evidence's prior precision there,
      ``"log_marginal_likelihood"`` (k,) the evidence (LA6) at it, ``"sigma_noise"`` (k,);
      ``"loss"`` (epochs,) each epoch's mean cost J over its minibatches (the mean of the
      epoch's ``metrics.cost``, each J before its update, without the penalty);
      ``"weight_decay"`` (epochs,) or (epochs, L) the lambda each epoch trained with.
    """

    params: list
    posterior: Posterior
    history: dict


class PriorDecayState(NamedTuple):
    """The state of :func:`prior_decay`: ``weight_decay`` (L,), lambda_l of layer l."""

    weight_decay: jax.Array


def prior_decay(weight_decay=0.0) -> optax.GradientTransformation:
    """The prior's gradient as an optax transformation: g[l] + lambda_l theta[l], W and b.

    ``init(params)`` gives :class:`PriorDecayState` with ``weight_decay`` the (L,) array
    ``weight_decay`` broadcast (a number or L numbers, in the dtype of params[0]["W"]);
    ``update(grads, state, params)`` returns [{"W": gW[l] + lambda_l W[l], "b": gb[l] +
    lambda_l b[l]}, ...] and the state unchanged. lambda is a value of the state, not of the
    transformation: set it with ``state._replace(weight_decay=...)`` (same shape and dtype)
    and a jitted step or epoch runs with it without being traced again. Chained before
    another transformation (``optax.chain(prior_decay(), optax.adam(...))``) the other one
    sees the gradient of J + sum_l (lambda_l / 2) ||[W[l] b[l]]||^2.
    """

    def init(params):
        L = len(params)
        return PriorDecayState(jnp.broadcast_to(
            jnp.asarray(weight_decay, jnp.result_type(params[0]["W"])), (L,)))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("params: prior_decay needs the parameters (update(grads, state, "
                             "params)), got None.")
        wd = state.weight_decay
        return [{k: g[k] + wd[l] * p[k] for k in ("W", "b")}
                for l, (g, p) in enumerate(zip(grads, params))], state

    return optax.GradientTransformation(init, update)


def _with_prior(optimizer):
    return optax.chain(prior_decay(), optimizer)


# The same user optimizer gives the same chain, hence the same cached epoch of
# make_train_epoch (its compiled programs reused by a later call).
_cached_with_prior = functools.lru_cache(maxsize=64)(_with_prior)


@functools.lru_cache(maxsize=1)
def _default_optimizer():
    return optax.adam(1e-3)


def _prior(delta):
    """The prior for :func:`laplace`: a float, or a list of L floats (per layer)."""
    return delta if isinstance(delta, float) else [float(d) for d in delta]


def _layer_prior(prior_precision, L):
    """``prior_precision`` with a jax array as a NumPy one; a per-parameter prior (a pytree
    of arrays, accepted by :func:`jaxmlp.laplace.laplace`) or an array of more than one
    axis refused by name: the weight decay here has one lambda per layer."""
    pp = prior_precision
    if isinstance(pp, jax.Array) and not isinstance(pp, jax.core.Tracer):
        pp = np.asarray(pp)
    if isinstance(pp, np.ndarray) and pp.ndim == 0:
        return pp[()]
    nested = isinstance(pp, dict) or (isinstance(pp, (list, tuple)) and any(
        isinstance(v, (dict, list, tuple)) or np.ndim(v) != 0 for v in pp))
    if nested or (isinstance(pp, np.ndarray) and pp.ndim > 1):
        got = (f"an array of shape {pp.shape}" if isinstance(pp, np.ndarray) else
               f"a {type(pp).__name__} of {', '.join(sorted({type(v).__name__ for v in pp}))}"
               if isinstance(pp, (list, tuple)) else f"a {type(pp).__name__}")
        raise TypeError(f"prior_precision: expected a number > 0 or {L} numbers > 0 (one per "
                        f"layer, a sequence or a 1-D array); marglik_training's weight decay "
                        f"has one prior per layer, so a per-parameter prior (a params-shaped "
                        f"pytree, which jaxmlp.laplace.laplace accepts) is not; got {got}.")
    return pp


def _nonneg_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}.")
    return int(value)


def marglik_training(net: Network, params, X, Y, *, epochs: int = 300,
                     batch_size: Optional[int] = None, optimizer=None,
                     structure: str = "kron", prior_precision=1.0,
                     burnin: int = 0, frequency: int = 1, hypersteps: int = 10,
                     hyper_learning_rate: float = 0.1, temperature: float = 1.0,
                     sigma_noise: float = 1.0, key=None,
                     explode_factor: Optional[float] = DEFAULT_EXPLODE_FACTOR) -> MarglikResult:
    """Trains ``net`` from ``params`` with the prior precision learned by the evidence.

    Arguments:
      net, params: the network and its initial parameters [{"W", "b"}, ...].
      X, Y: the training split (n[0], n), (n[L], n) (finite).
      epochs: training epochs (laplace-torch's default 300).
      batch_size: columns per minibatch (None: min(n, 64); at most n). An epoch is
        :func:`jaxmlp.train.make_train_epoch`'s: a shuffle of the n columns, then
        n // batch_size updates; the n % batch_size columns left over sit that epoch out (a
        new shuffle each epoch), as in every training of the library.
      optimizer: an optax ``GradientTransformation`` without weight decay (default
        ``optax.adam(1e-3)``, laplace-torch's); the prior's decay is added here.
      structure: the posterior's structure, "diag", "kron" (default) or "full" (the prior
        covers every parameter; "last_layer" is refused, as laplace-torch's
        ``marglik_training`` fits all weights).
      prior_precision: the initial prior precision delta > 0: a number (one prior for every
        parameter) or a sequence of L numbers (one per layer, [W[l] b[l]] together; laplace-
        torch's default "layerwise" has one per tensor, W and b apart); its kind is kept
        (laplace-torch's initial value: 1).
      burnin, frequency: the prior is updated after epoch e when e >= ``burnin``,
        e % ``frequency`` == 0 and e < ``epochs`` (laplace-torch: 0 and 1).
      hypersteps, hyper_learning_rate: the evidence ascent's Adam steps and rate at each
        update (laplace-torch: 10 and 0.1; here each update starts a new Adam from the current
        prior, where laplace-torch keeps one Adam state over the run).
      temperature: T of (LA2). sigma_noise: the initial noise scale (mean squared error
        only, fitted with the prior; 1 otherwise).
      key: the PRNG key of the minibatch order (default ``jax.random.PRNGKey(0)``), split
        before each epoch as :func:`jaxmlp.fit` splits it (the same key and batch size give
        ``fit``'s minibatches).
      explode_factor: the training diverged when, after an epoch, its parameters are not
        finite, or a cost is not finite or above ``explode_factor`` times b = |J_1|, J_1 the
        first epoch's mean cost (the test is off while J_1 = 0; None disables the comparison,
        not the finiteness test): the epoch's mean cost J (F3) over its minibatches, and,
        before each Laplace fit (the evidence's and the returned posterior's), J on the
        whole training split at the epoch's parameters (the cost the posterior's curvature
        sits at; it catches an exploding last update). As :func:`jaxmlp.fit`'s (default 1e6).

    Returns:
      a :class:`MarglikResult` (params, posterior, history). laplace-torch returns the
      parameters and posterior of the epoch with the best evidence; here the last epoch's.

    Raises ValueError / TypeError naming the argument; ValueError "marglik_training: the
    training diverged at epoch e (...); lower the optimizer's learning rate." when an epoch
    fails the ``explode_factor`` test, before any Laplace fit at its parameters, and when the
    evidence ascent fails at parameters whose cost on the training split is above the
    initial parameters' (the training went uphill: its learning rate, not the ascent's, is
    at fault).
    """
    X, Y = checks.check_problem(net, params, X, Y)
    checks.check_finite(X=X, Y=Y)
    dtype = X.dtype
    n = X.shape[1]
    epochs = checks.positive_int("epochs", epochs)
    batch_size = min(n, 64) if batch_size is None else min(
        checks.positive_int("batch_size", batch_size), n)
    if optimizer is None:
        optimizer = _default_optimizer()
    optimizer = check_optimizer(optimizer)
    if not isinstance(structure, str) or structure not in STRUCTURES:
        raise ValueError(f"structure: expected one of {list(STRUCTURES)}, got {structure!r}.")
    if structure == "last_layer":
        raise ValueError("structure: 'last_layer' has a prior on the last layer only, the "
                         "weight decay of the other layers would have none; expected one of "
                         "'diag', 'kron', 'full', got 'last_layer'.")
    L = net.num_layers
    prior_precision = _layer_prior(prior_precision, L)
    if isinstance(prior_precision, (list, tuple, np.ndarray)) and np.ndim(prior_precision) == 1:
        if len(prior_precision) != L:
            raise ValueError(f"prior_precision: expected a number or {L} numbers (one per "
                             f"layer), got {len(prior_precision)} numbers.")
        delta = np.asarray([real_number(f"prior_precision[{l}]", float(v), low=0.0,
                                        low_open=True) for l, v in enumerate(prior_precision)])
        per_layer = True
    else:
        delta = real_number("prior_precision", prior_precision, low=0.0, low_open=True)
        per_layer = False
    burnin = _nonneg_int("burnin", burnin)
    frequency = checks.positive_int("frequency", frequency)
    hypersteps = checks.positive_int("hypersteps", hypersteps)
    hyper_lr = real_number("hyper_learning_rate", hyper_learning_rate, low=0.0, low_open=True)
    T = real_number("temperature", temperature, low=0.0, low_open=True)
    regression = net.cost == "mean_squared_error"
    sigma = real_number("sigma_noise", sigma_noise, low=0.0, low_open=True)
    if not regression and sigma != 1.0:
        raise ValueError(f"sigma_noise: only mean_squared_error has a noise scale, the cost is "
                         f"{net.cost!r}; got {sigma_noise!r}.")
    key = jax.random.PRNGKey(0) if key is None else checks.prng_key(key)
    if explode_factor is not None:
        explode_factor = real_number("explode_factor", explode_factor, low=1.0, low_open=True)
    params = [{"W": jnp.asarray(p["W"], dtype), "b": jnp.asarray(p["b"], dtype)}
              for p in params]

    try:
        chained = _cached_with_prior(optimizer)
    except TypeError:  # an optimizer that cannot be hashed: a chain of its own
        chained = _with_prior(optimizer)
    epoch = make_train_epoch(net, chained, batch_size)
    state = chained.init(params)
    fit = functools.partial(laplace, net, X=X, Y=Y, structure=structure, temperature=T)
    hist = {"epoch": [], "prior_precision": [], "log_marginal_likelihood": [],
            "sigma_noise": [], "loss": [], "weight_decay": []}

    def check(e, what, cost, params_ok=True):
        """The ``explode_factor`` test of epoch e: ``cost`` finite and at most
        explode_factor |J_1| (J_1 the first epoch's mean cost), the parameters finite."""
        baseline = abs(hist["loss"][0])
        if not params_ok:
            what = f"{what}, non-finite parameters after its last update"
        elif not np.isfinite(cost):
            pass
        elif explode_factor is not None and baseline > 0 and cost > explode_factor * baseline:
            what = (f"{what}, more than {explode_factor:g} times the first epoch's mean cost "
                    f"{baseline:.4g} (explode_factor)")
        else:
            return
        raise ValueError(f"marglik_training: the training diverged at epoch {e} ({what}); "
                         f"lower the optimizer's learning rate.")

    def check_at_params(e, params):
        J = float(cost_and_metrics_kernel(net, params, X, Y)["cost"])
        check(e, f"cost {J:.4g} on the training split at its parameters", J)
        return J
    J0 = float(cost_and_metrics_kernel(net, params, X, Y)["cost"])  # at the initial params
    for e in range(1, epochs + 1):
        wd = np.asarray(delta, np.float64) * T * sigma ** 2 / n
        # the new lambda, a value of the state: the compiled epoch is reused
        state = (state[0]._replace(weight_decay=jnp.broadcast_to(jnp.asarray(wd, dtype), (L,))),
                 *state[1:])
        key, sub = split_key(key)
        params, state, metrics = epoch(params, state, sub, X, Y)
        J = jnp.mean(metrics.cost)
        hist["loss"].append(float(J))
        hist["weight_decay"].append(wd)
        check(e, f"mean cost {hist['loss'][-1]:.4g}", hist["loss"][-1],
              bool(all_finite(params)))
        if e >= burnin and e % frequency == 0 and e < epochs:
            J = check_at_params(e, params)
            la = fit(params=params, prior_precision=_prior(delta), sigma_noise=sigma)
            try:
                la = optimize_prior_precision(la, "marglik", steps=hypersteps,
                                              learning_rate=hyper_lr, fit_sigma_noise=regression)
            except ValueError as err:
                if not J > J0:
                    raise
                # the training went uphill: its parameters, not the ascent's rate, are wrong
                raise ValueError(
                    f"marglik_training: the training diverged at epoch {e} (cost {J:.4g} on "
                    f"the training split at its parameters, above the initial cost {J0:.4g}, "
                    f"where the evidence ascent failed: {err}); lower the optimizer's "
                    f"learning rate.") from None
            delta = np.asarray(la.prior_precision, np.float64) if per_layer else float(
                la.prior_precision)
            sigma = float(la.sigma_noise)
            hist["epoch"].append(e)
            hist["prior_precision"].append(delta)
            hist["sigma_noise"].append(sigma)
            hist["log_marginal_likelihood"].append(float(la.log_marginal_likelihood()))
    check_at_params(epochs, params)
    posterior = fit(params=params, prior_precision=_prior(delta), sigma_noise=sigma)
    return MarglikResult(params, posterior,
                         {k: np.asarray(v, np.float64) for k, v in hist.items()})
