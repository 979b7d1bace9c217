"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

Batch-first at the boundary, as scikit-learn, optax and Equinox users hold their data:
``X`` is (n_samples, n_features) and ``y`` is what scikit-learn gives (a label vector, a
label-indicator matrix, or a target vector or matrix). Inside it is the same library:
X is transposed ONCE to the column-major (n[0], m) of the derivations, the network is a
:class:`jaxmlp.Network`, and every minibatch update is the hand-derived gradient (F1)-(F3),
(B1)-(B4) of the minibatch's weighted cost
(:func:`jaxmlp.nn.propagation.weighted_value_and_grad_kernel`) and an optax update
(:func:`jaxmlp.train.step.optimizer_update`).

A fit is ONE compiled program per shape (:func:`_fit_program`): up to 256 epochs in a
``lax.while_loop``, each a ``lax.scan`` over its minibatches, with scikit-learn's stop
test after every epoch inside the loop; the host draws each epoch's shuffle (NumPy, from
``random_state``, as scikit-learn does) and reads the losses once per call. Fits with the
same network, optimizer and minibatch shape reuse it: the learning rate and ``alpha`` are
arguments of the program, not constants (a grid search over them compiles once), and the
folds of a cross-validation share it, the training columns being padded to a multiple of
64; predictions pad the rows to a power of two.

Names and defaults follow :class:`sklearn.neural_network.MLPClassifier` where the meaning
is the same (``hidden_layer_sizes``, ``activation``, ``alpha``, ``batch_size``,
``max_iter``, ``random_state``, ``early_stopping``, ``validation_fraction``,
``n_iter_no_change``, ``tol``, ``learning_rate_init``, ``verbose`` (a bool or an integer
>= 0); fitted ``classes_`` (with y's dtype), ``n_iter_``, ``loss_curve_``, ``loss_`` (the
last epoch's), ``best_loss_``, ``t_`` (samples trained on), ``validation_scores_``,
``best_validation_score_``, ``coefs_``, ``intercepts_``, ``out_activation_`` (scikit-learn's
names: ``"softmax"``, ``"logistic"``, ``"identity"``); ``predict_log_proba``; SciPy sparse
``X``, densified), and so does the initialisation:
W[l] and b[l] uniform on [-r, r], r = sqrt(6 / (n[l-1] + n[l])) (factor 2 instead of 6 for
sigmoid hidden units), drawn by NumPy from ``random_state`` in scikit-learn's order, so the
same ``random_state`` starts from scikit-learn's weights; early stopping's validation split
is scikit-learn's (``train_test_split``, drawn next, :meth:`_BaseMLP._validation_split`).
Where ours differ:

* ``optimizer`` is one of :data:`jaxmlp.train.OPTIMIZERS` (scikit-learn's ``solver``);
  ``learning_rate_init`` is the optax learning rate; no ``learning_rate`` schedule string.
  ``alpha`` is scikit-learn's L2 term, (alpha / 2) ||W||^2 / s added to the mean cost of a
  minibatch, s its number of samples (the sum of their ``sample_weight``) (its gradient
  alpha W[l] / s, on the weights only);
  ``weight_decay`` is further L2 strength of :func:`jaxmlp.train.make_optimizer`
  (decoupled for ``"adamw"``), 0 by default.
* A classifier with one label column has a softmax output over ``classes_`` (also for two
  classes, where scikit-learn has one sigmoid unit); a label-indicator ``y`` gives
  independent sigmoid outputs (multi-label).
* An epoch is scikit-learn's minibatches, every sample in one: its shuffle of the sample
  indices cut by ``gen_batches(n, b)``, b = min(batch_size, n); the last minibatch, of
  n - (ceil(n / b) - 1) b samples, is filled up to b with columns of weight 0 (one compiled
  shape per (b, ceil(n / b))). An epoch's loss is scikit-learn's: the minibatches' losses
  (the L2 term at the weights before each update) times their sizes, summed, over n.
  ``sample_weight`` (``fit``, ``partial_fit``) weights each minibatch's cost,
  sum w_i L_i / sum w_i, as scikit-learn's. With ``"kfac"`` the Kronecker factors of the
  filled-up minibatch include its weight-0 columns (copies of samples); the gradient is
  exact. No ``warm_start``, ``shuffle``, ``momentum``: ``fit`` starts anew, ``partial_fit``
  continues.
* ``coefs_[l]`` is W[l+1]^T, (n[l], n[l+1]), as scikit-learn stores it: writable float64
  arrays that prediction and ``partial_fit`` read (:meth:`_BaseMLP._current_params`).
* An epoch's loss of the regressor with several targets is scikit-learn's: its squared
  loss averages over the targets, its gradient is that of their sum (:func:`_loss_scale`).
* ``target_epsilon`` (with ``delta`` and ``l2_norm_clip``) trains with DP-SGD
  (:class:`jaxmlp.privacy.DPSGD`, through :func:`jaxmlp.fit`, one compiled call per
  epoch): the noise multiplier is calibrated so that ``max_iter`` epochs of
  Poisson-sampled batches (expected size ``batch_size``) spend at most ``target_epsilon``;
  the fitted ``noise_multiplier_``, ``sampling_rate_``, ``epsilon_`` (spent) and ``delta_``
  (the delta ``epsilon_`` is for: ``delta``, or min(1e-5, 0.1 / n) for None, n the training
  samples) report it; ``l2_norm_clip`` None is 1. ``delta`` and ``l2_norm_clip`` are refused
  without ``target_epsilon``. Early stopping is refused with it (the validation split would
  be read outside the accountant), and so is ``partial_fit`` on a privately fitted model
  (its further training would spend privacy that ``epsilon_`` does not count). With it the
  fit trains exactly ``max_iter`` epochs: ``tol`` and ``n_iter_no_change`` are not read
  (their stop test reads the training cost, computed from the raw data outside the
  accountant, so when the training stopped would depend on the data), and no
  ``ConvergenceWarning`` is raised. ``epsilon_`` covers the fitted parameters (``coefs_``,
  ``intercepts_``) only: ``loss_curve_``, ``loss_`` and ``best_loss_`` are the exact
  training costs of the raw data, not private outputs (the estimator has no scaler: no
  other statistic of the data is stored). A divergence (:func:`jaxmlp.fit`'s status
  ``"diverged"``) raises a FloatingPointError that names no cost.
* ``laplace`` (None, or a structure of :data:`jaxmlp.laplace.STRUCTURES`: ``"kron"``,
  ``"last_layer"``, ``"diag"``, ``"full"``): after the fit, the Laplace posterior
  N(theta*, P^{-1}) (LA1), (LA2) at the fitted parameters, from
  :func:`jaxmlp.laplace.from_fit` on the training columns (the samples the network trained
  on, without an early-stopping validation split), the prior precision (and the regressor's
  noise scale) chosen by the evidence (LA6), (LA8), (LA9); fitted as ``laplace_`` (a
  :class:`jaxmlp.laplace.Posterior`). The classifier's ``predict_proba`` is then the GLM
  predictive (LA10), (LA11) with the probit link (``predict`` its argmax, or each label's
  probability above 0.5); the regressor's ``predict(X, return_std=True)`` also returns the
  predictive standard deviation sqrt(diag J P^{-1} J^T + sigma_noise^2) in y's units
  (scikit-learn's ``BayesianRidge`` convention). Not with ``target_epsilon`` (the curvature
  sums over the training samples outside the privacy accountant: the posterior would not be
  private); ``partial_fit`` does not exist with it (the posterior conditions on the whole
  training set: the AttributeError's cause says so). With it, integer ``sample_weight`` whose
  sum is above :func:`_laplace_max_rows` is refused before the training (the posterior's
  samples are the rows repeated by their weights), and so is a multi-target y whose targets'
  standard deviations differ by more than a factor :data:`_LAPLACE_SCALE_RATIO` (the
  posterior has one noise scale sigma_noise for all targets).
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse
from jax import lax

try:
    import sklearn  # noqa: F401
except ImportError:
    raise ImportError("jaxmlp.sklearn needs scikit-learn, which is not installed (pip install "
                      "'jaxmlp[sklearn]').") from None
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import (_check_sample_weight, check_is_fitted, column_or_1d,
                                      validate_data)

# What a fit needs is imported with this module (as scikit-learn's estimators import theirs),
# so that a first fit imports nothing: optax and the training package. jaxmlp.laplace is
# imported only by a fit with ``laplace`` set.
import jaxmlp
from jaxmlp import privacy
from jaxmlp.nn import checks
from jaxmlp.nn.propagation import weighted_value_and_grad_kernel
from jaxmlp.train import TrainState, make_optimizer
from jaxmlp.train.step import kfac_update_inputs, needs_kfac_factors, optimizer_update

__all__ = ["MLPClassifier", "MLPRegressor"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}.")
    return int(value)


def _weights_only(params):
    """The L2 term's mask: the weights W[l], never the biases b[l]."""
    return [{"W": True, "b": False} for _ in params]


@functools.lru_cache(maxsize=32)
def _optimizer(name, learning_rate, weight_decay, l2):
    """One optax optimizer object per setting: DP-SGD's fits and ``"kfac"``'s use it as it
    is (the other fits use :func:`_tunable_optimizer`, whose rate and ``l2`` are values of its
    state), and every fit builds it to check the settings. ``l2`` = alpha / batch: the
    gradient alpha W[l] / b of scikit-learn's penalty (alpha / 2) ||W||^2 / b on a minibatch
    of b samples, added before the optimizer sees it. For ``"kfac"`` it joins K-FAC's own
    ``weight_decay`` (the same term, added to the gradient of W[l] inside the transformation,
    which the training step must see unwrapped to hand it the Kronecker factors)."""
    if name == "kfac":
        return make_optimizer(name, learning_rate, weight_decay=weight_decay + l2)
    base = make_optimizer(name, learning_rate, weight_decay=weight_decay)
    if l2 > 0:
        return optax.chain(optax.add_decayed_weights(l2, mask=_weights_only), base)
    return base


@functools.lru_cache(maxsize=32)
def _tunable_optimizer(name, weight_decay):
    """The optimizer of :func:`_fit_program` for every optimizer but ``"kfac"``: the one of
    :func:`_optimizer`, with the learning rate and ``l2`` values of its state
    (``optax.inject_hyperparams``) that each call of the program sets, so that fits that
    differ only in ``learning_rate_init`` or ``alpha`` (a grid search over them) share one
    compiled program."""

    def make(learning_rate, l2):
        return optax.chain(optax.add_decayed_weights(l2, mask=_weights_only),
                           make_optimizer(name, learning_rate, weight_decay=weight_decay))

    return optax.inject_hyperparams(make)(learning_rate=1e-3, l2=0.0)  # replaced per call


def _hidden_sizes(value: Any) -> tuple:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        sizes = tuple(value)
    except TypeError:
        raise ValueError(f"hidden_layer_sizes: expected a tuple of positive integers, got "
                         f"{value!r}.") from None
    return tuple(_positive_int(f"hidden_layer_sizes[{i}]", n) for i, n in enumerate(sizes))


def _without_laplace(estimator) -> bool:
    """``partial_fit`` exists only without ``laplace`` (scikit-learn's ``available_if``):
    the posterior conditions on the whole training set, one call of ``fit``."""
    if estimator.laplace is not None:
        raise AttributeError(f"partial_fit: not with laplace={estimator.laplace!r} (the "
                             "posterior conditions on the whole training set); use fit.")
    return True


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the fit loop, prediction."""

    _output_activation: str
    _cost: str
    #: The early-stopping score on the validation split (:func:`_validation_score`).
    _validation: str

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation: str = "relu",
        *,
        optimizer: str = "adam",
        learning_rate_init: float = 1e-3,
        alpha: float = 1e-4,
        batch_size="auto",
        max_iter: int = 200,
        weight_decay: float = 0.0,
        random_state=None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        target_epsilon: Optional[float] = None,
        delta: Optional[float] = None,
        l2_norm_clip: Optional[float] = None,
        laplace: Optional[str] = None,
        verbose: bool = False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.l2_norm_clip = l2_norm_clip
        self.laplace = laplace
        self.verbose = verbose

    # ------------------------------------------------------------------ the boundary

    def _targets(self, y: np.ndarray, *, first: bool, classes=None) -> np.ndarray:
        """y as scikit-learn gives it -> Y (n_samples, n[L]) of the network's cost."""
        raise NotImplementedError

    def _network(self, n_features: int, n_outputs: int):
        if self.activation not in jaxmlp.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(jaxmlp.ACTIVATIONS)}, got "
                             f"{self.activation!r}.")
        sizes = (n_features, *_hidden_sizes(self.hidden_layer_sizes), n_outputs)
        acts = (self.activation,) * (len(sizes) - 2) + (self._output_activation,)
        return jaxmlp.Network(sizes=sizes, activations=acts, cost=self._cost)

    def _batch(self, n: int) -> tuple[int, int]:
        """(b, minibatches per epoch): scikit-learn's ``gen_batches(n, b)``, b =
        min(batch_size, n): ceil(n / b) minibatches, the last one of n - (num - 1) b samples
        (filled up to b with columns of weight 0 in the compiled program)."""
        b = 200 if self.batch_size == "auto" else _positive_int("batch_size", self.batch_size)
        b = min(b, n)
        return b, -(-n // b)

    def _check_settings(self) -> None:
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ValueError(f"early_stopping: expected a bool (True or False), got "
                             f"{self.early_stopping!r}.")
        verbose = self.verbose
        if not (isinstance(verbose, (bool, np.bool_))
                or (isinstance(verbose, numbers.Integral) and verbose >= 0)):
            raise ValueError(f"verbose: expected a bool (True or False), got {verbose!r} (an "
                             f"integer >= 0 is taken too, as scikit-learn's).")
        state = self.random_state
        if not (state is None or isinstance(state, np.random.RandomState)
                or (isinstance(state, numbers.Integral) and 0 <= state <= 2**32 - 1)):
            raise ValueError(f"random_state: expected None, an integer in [0, 2**32 - 1] or a "
                             f"numpy.random.RandomState instance, got {state!r}.")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, numbers.Real):
            raise ValueError(f"weight_decay: expected a number >= 0, got {wd!r}.")
        _positive_int("max_iter", self.max_iter)
        _positive_int("n_iter_no_change", self.n_iter_no_change)
        for name in ("alpha", "tol"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not value >= 0 or not np.isfinite(value)):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}.")
        lr = self.learning_rate_init
        if (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0
                or not np.isfinite(lr)):
            raise ValueError(f"learning_rate_init: expected a finite number > 0, got {lr!r}.")
        if not (isinstance(self.validation_fraction, numbers.Real)
                and 0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction: expected a number in (0, 1), got "
                             f"{self.validation_fraction!r}.")
        if self.target_epsilon is None:
            for name in ("delta", "l2_norm_clip"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: used with target_epsilon only (DP-SGD's "
                                     f"setting); got {name}={getattr(self, name)!r} with "
                                     f"target_epsilon=None.")
        if self.target_epsilon is not None and self.early_stopping:
            raise ValueError("early_stopping: not with target_epsilon (the validation split "
                             "would be read outside the privacy accountant); got True.")
        if self.laplace is not None:
            if not isinstance(self.laplace, str) or self.laplace not in _LAPLACE:
                raise ValueError(f"laplace: expected None or one of {list(_LAPLACE)}, got "
                                 f"{self.laplace!r}.")
            if self.target_epsilon is not None:
                raise ValueError(
                    f"laplace: not with target_epsilon (the posterior's curvature sums over "
                    f"the training samples outside the privacy accountant, so the fitted "
                    f"model would not be private); got laplace={self.laplace!r}.")

    # ------------------------------------------------------------------ training

    def _optimizer(self, batch: int):
        l2 = float(self.alpha) / batch
        try:
            return _optimizer(self.optimizer, self.learning_rate_init, self.weight_decay, l2)
        except TypeError:  # an unhashable setting: make_optimizer says what is wrong with it
            return _optimizer.__wrapped__(self.optimizer, self.learning_rate_init,
                                          self.weight_decay, l2)

    def _program_optimizer(self, batch: int):
        """(optimizer, hyperparameters) of :func:`_fit_program`: :func:`_tunable_optimizer`
        and its values ``{"learning_rate", "l2"}`` (float32), or for ``"kfac"`` (whose
        training step must see the K-FAC transformation itself) :meth:`_optimizer`'s and
        ``{}``. The settings are checked by :meth:`_optimizer` either way."""
        opt = self._optimizer(batch)
        if self.optimizer == "kfac":
            return opt, {}
        return (_tunable_optimizer(self.optimizer, self.weight_decay),
                {"learning_rate": np.float32(self.learning_rate_init),
                 "l2": np.float32(float(self.alpha) / batch)})

    def _dp(self, n: int):
        """The DP-SGD settings of a run of ``max_iter`` epochs at rate batch_size / n."""
        if self.target_epsilon is None:
            return None
        b = 200 if self.batch_size == "auto" else _positive_int("batch_size", self.batch_size)
        q = min(b, n) / n  # Poisson sampling: batch_size is the expected batch
        delta = self.delta if self.delta is not None else min(1e-5, 0.1 / n)
        spe = privacy.default_steps_per_epoch(q)
        sigma = privacy.calibrate_noise(target_epsilon=self.target_epsilon, delta=delta,
                                        sampling_rate=q, steps=self.max_iter * spe)
        clip = 1.0 if self.l2_norm_clip is None else self.l2_norm_clip
        return privacy.DPSGD(l2_norm_clip=clip, noise_multiplier=sigma,
                             sampling_rate=q, delta=delta, steps_per_epoch=spe,
                             target_epsilon=self.target_epsilon)

    def _fit(self, X, y, *, incremental: bool, classes=None, sample_weight=None):
        if incremental and isinstance(getattr(self, "_state", None), TrainState):
            raise ValueError(
                f"partial_fit: the model was trained privately (fit with target_epsilon="
                f"{self._private_epsilon!r}); training it further outside the privacy "
                f"accountant would spend privacy that epsilon_ does not count; fit anew "
                f"instead.")
        self._check_settings()
        first = not (incremental and hasattr(self, "_state"))
        if incremental and self.target_epsilon is not None:
            raise ValueError("partial_fit: not with target_epsilon (the accountant needs the "
                             "whole run's steps); use fit.")
        if incremental and self.early_stopping:
            raise ValueError("early_stopping: not with partial_fit (one epoch per call, no "
                             "validation split), as in scikit-learn; got True.")
        X, y = validate_data(self, X, y, reset=first, multi_output=True, dtype=np.float64,
                             y_numeric=isinstance(self, RegressorMixin), accept_sparse=_SPARSE)
        X = _dense(X)
        SW = self._sample_weight(sample_weight, X)
        Y = self._targets(y, first=first, classes=classes)
        rng = check_random_state(self.random_state)
        initial = None
        if first:  # scikit-learn's order of draws: the weights, the validation split, shuffles
            self._net = self._network(X.shape[1], Y.shape[1])
            self._check_laplace_size()
            before = rng.get_state() if self.early_stopping else None
            initial = _initial_params(self._net.sizes, rng, self._init_factor())
            sizes = self._sklearn_sizes()
            if before is not None and sizes != self._net.sizes:
                # scikit-learn draws other shapes (one sigmoid unit for two classes): the
                # split and the shuffles continue from the state its draws leave.
                rng.set_state(before)
                _initial_params(sizes, rng, self._init_factor())
            self.loss_curve_ = []
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = None
            self.best_loss_ = None if self.early_stopping else np.inf
            self.n_iter_ = 0
            self.t_ = 0
            for name in _PRIVATE_ATTRIBUTES:  # a private fit's, not this fit's
                self.__dict__.pop(name, None)
        X_val = Y_val = SW_val = None
        if self.early_stopping:
            train, val = self._validation_split(Y, rng)
            X_val, Y_val, SW_val = X[val], Y[val], SW[val]
            X, Y, SW = X[train], Y[train], SW[train]
        if self.target_epsilon is not None:
            self._fit_private(X, Y, rng, initial)
        else:
            self._fit_epochs(X, Y, SW, X_val, Y_val, SW_val, rng, initial if first else None,
                             incremental=incremental)
        params = self._params()
        if self.laplace is None:
            self.laplace_ = None
        else:  # each training sample repeated as often as its (integer) weight
            counts = SW.astype(np.int64)
            self.laplace_ = self._posterior(params, np.repeat(X, counts, 0),
                                            np.repeat(Y, counts, 0))
        # float64 copies, writable, as scikit-learn's: prediction and partial_fit read them
        # (:meth:`_current_params`), so setting them sets the model.
        self.coefs_ = [np.ascontiguousarray(np.asarray(p["W"], np.float64).T) for p in params]
        self.intercepts_ = [np.array(p["b"], np.float64) for p in params]
        self.n_layers_ = len(params) + 1
        self.n_outputs_ = self._net.sizes[-1]
        self.out_activation_ = _SKLEARN_ACTIVATION[self._output_activation]
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else None
        return self

    def _current_params(self):
        """The parameters [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...] as float32 from
        ``coefs_`` and ``intercepts_`` (W[l] = coefs_[l-1]^T), which a user may have set:
        prediction and partial_fit use them, as scikit-learn's. For an unedited model they
        are the fitted float32 parameters exactly (float32 -> float64 -> float32)."""
        return [{"W": np.ascontiguousarray(np.asarray(W, np.float32).T),
                 "b": np.ascontiguousarray(np.asarray(b, np.float32))}
                for W, b in zip(self.coefs_, self.intercepts_, strict=True)]

    def _sklearn_sizes(self) -> tuple:
        """The layer sizes of scikit-learn's network for the same data: ours, but one
        sigmoid output unit for two classes (:meth:`MLPClassifier._sklearn_sizes`)."""
        return self._net.sizes

    def _stratify(self, Y) -> Optional[np.ndarray]:
        """The labels scikit-learn's validation split is stratified by: None (the
        classifier's :meth:`MLPClassifier._stratify` says when it is)."""
        return None

    def _validation_split(self, Y, rng) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, validation rows) of early stopping, scikit-learn's:
        ``train_test_split`` of the n rows with ``test_size=validation_fraction``, drawn from
        ``rng`` after the initialisation: ceil(validation_fraction n) validation rows, a
        permutation's (ShuffleSplit), or per class for a classifier with one label column of
        two classes (StratifiedShuffleSplit, :meth:`_stratify`). The training rows are in the
        split's order (the shuffles permute their positions). Refused as scikit-learn refuses
        it: no training row, or fewer than 2 validation rows."""
        n, fraction = Y.shape[0], self.validation_fraction
        n_val = math.ceil(fraction * n)  # scikit-learn's _validate_shuffle_split
        if n - n_val < 1:
            raise ValueError(f"validation_fraction: leaves no training sample of {n} "
                             f"(ceil({fraction} x {n}) = {n_val} validation samples); got "
                             f"{fraction}.")
        if n_val < 2:
            raise ValueError(f"validation_fraction: the validation set is too small, "
                             f"expected at least 2 samples, got ceil({fraction} x {n}) = "
                             f"{n_val}; increase validation_fraction (got {fraction}) or the "
                             f"number of samples.")
        stratify = self._stratify(Y)
        try:
            train, val = train_test_split(np.arange(n), random_state=rng, test_size=fraction,
                                          stratify=stratify)
        except ValueError as err:
            if stratify is None:
                raise
            raise ValueError(f"validation_fraction: the validation split stratified by class "
                             f"(as scikit-learn's) of {n} samples with validation_fraction="
                             f"{fraction} is not possible: {err}") from err
        return train, val

    def _sample_weight(self, sample_weight, X) -> np.ndarray:
        """scikit-learn's checks of ``sample_weight`` (``_check_sample_weight``: shape
        (n_samples,), finite, not all zero), and >= 0; ones for None. Not with
        ``target_epsilon`` (the accountant bounds each sample's unweighted contribution);
        integers with ``laplace`` (the posterior conditions on each sample repeated as often
        as its weight)."""
        if sample_weight is None:
            return np.ones(X.shape[0])
        SW = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if self.target_epsilon is not None:
            raise ValueError("sample_weight: not with target_epsilon (the privacy accountant "
                             "bounds each sample's unweighted contribution); got weights.")
        if self.laplace is not None and not np.array_equal(SW, np.round(SW)):
            bad = SW[SW != np.round(SW)][0]
            raise ValueError(f"sample_weight: with laplace={self.laplace!r}, expected integer "
                             f"weights (the posterior conditions on each sample repeated as "
                             f"often as its weight), got {bad}.")
        if self.laplace is not None:
            n, rows = X.shape[0], float(np.sum(SW))
            limit = _laplace_max_rows(n)
            if rows > limit:
                raise ValueError(f"sample_weight: with laplace={self.laplace!r}, the posterior "
                                 f"conditions on each sample repeated as often as its weight, "
                                 f"expected weights summing to at most {limit} rows "
                                 f"(max(n, min(100 n, 10^7)), n = {n} samples), got a sum of "
                                 f"{rows:.4g}; scale the weights down.")
        return SW

    def _y_limit(self) -> float:
        """The largest magnitude of a target the float32 network takes (:func:`_columns`)."""
        return _FLOAT32_MAX

    def _check_laplace_size(self) -> None:
        """"full" and "last_layer" hold a P x P matrix: refused above
        :data:`jaxmlp.laplace.FULL_MAX_PARAMS` parameters before the training, not after."""
        if self.laplace not in ("full", "last_layer"):
            return
        from jaxmlp.laplace import FULL_MAX_PARAMS

        sizes = self._net.sizes
        pairs = list(zip(sizes[:-1], sizes[1:]))
        if self.laplace == "last_layer":
            pairs = pairs[-1:]
        P = sum((n_in + 1) * n_out for n_in, n_out in pairs)
        if P > FULL_MAX_PARAMS:
            raise ValueError(f"laplace: {self.laplace!r} holds a P x P precision, P = {P} "
                             f"parameters here, above jaxmlp.laplace.FULL_MAX_PARAMS = "
                             f"{FULL_MAX_PARAMS}; use 'kron' or 'diag' (or smaller "
                             f"hidden_layer_sizes).")

    def _posterior(self, params, X, Y):
        """The Laplace posterior (LA1)-(LA5) at the fitted ``params`` on the training samples
        X (n_samples, n[0]), Y (n_samples, n[L]) (as columns, float32, unpadded), the prior
        chosen by the evidence (LA6): :func:`jaxmlp.laplace.from_fit`."""
        from jaxmlp.laplace import from_fit

        return from_fit(self._net, params, np.ascontiguousarray(X.T, np.float32),
                        np.ascontiguousarray(Y.T, np.float32), structure=self.laplace)

    def _params(self):
        """The current parameters [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]."""
        state = self._state
        return state["params"] if isinstance(state, dict) else state.params

    def _fit_epochs(self, X, Y, SW, X_val, Y_val, SW_val, rng, initial, *,
                    incremental: bool) -> None:
        """Epochs of :func:`_fit_program`, up to ``chunk`` per compiled call (the stop test
        runs inside it, after every epoch), from the parameters ``initial`` unless None
        (then from the fitted state); ``rng`` draws the shuffles; SW, SW_val: the sample
        weights (n_samples,) of the training and validation rows."""
        n = X.shape[0]
        batch, num = self._batch(n)
        opt, hyperparams = self._program_optimizer(batch)
        validation = None if X_val is None else self._validation
        chunk = _chunk(num * batch)
        program = _fit_program(self._net, opt, batch, num, chunk, validation,
                               tuple(sorted(_COMPILER_OPTIONS.items())))
        # Column-major from here on, (n[0], m) and (n[L], m), transposed once; the columns
        # padded to a multiple of _PAD (never drawn), so folds of a cross-validation that
        # differ by a few samples share one compiled program.
        Xc, Yc = _columns(X, _PAD, "X"), _columns(Y, _PAD, "y", self._y_limit())
        SWc = _columns(SW[:, None], _PAD, "sample_weight")[0]
        if X_val is None:
            Xv, Yv, SWv = (np.zeros((X.shape[1], 1), np.float32),
                           np.zeros((Y.shape[1], 1), np.float32), np.ones(1, np.float32))
        else:
            Xv, Yv = _columns(X_val, _PAD, "X"), _columns(Y_val, _PAD, "y", self._y_limit())
            SWv = _columns(SW_val[:, None], _PAD, "sample_weight")[0]
        fresh = initial is not None
        carry = (_first_carry(initial, opt) if fresh
                 else dict(self._state, params=self._current_params()))
        remaining = 1 if incremental else self.max_iter
        stopped = False
        data = jax.device_put((Xc, Yc, SWc, Xv, Yv, SWv))
        l2 = np.float32(float(self.alpha) / batch)  # what the optimizer adds itself
        settings = (np.int32(n), np.float32(self.tol),
                    np.int32(min(self.n_iter_no_change, np.iinfo(np.int32).max - 1)),
                    np.float32(self.alpha), l2)
        order = np.arange(n)
        while remaining > 0:
            limit = min(remaining, chunk)
            # Each epoch's order: the last epoch's order shuffled by a fresh permutation of
            # the n samples (scikit-learn's shuffle of its sample indices), cut into
            # scikit-learn's minibatches; the last one filled up to batch with the order's
            # first columns (any valid samples: weight 0 there).
            idx = np.zeros((chunk, num * batch), np.int32)
            for e in range(limit):
                order = order[rng.permutation(n)]
                idx[e, :n] = order
                idx[e, n:] = order[: num * batch - n]
            carry, losses, scores, count, stop, diverged = program(
                carry, np.bool_(fresh), idx.reshape(chunk, num, batch), *data,
                np.int32(limit), *settings, hyperparams)
            count = int(count)
            fresh = False
            new = np.asarray(losses, np.float64)[:count].tolist()
            self.loss_curve_.extend(new)
            if self.verbose:
                for i, loss in enumerate(new):
                    print(f"Iteration {self.n_iter_ + i + 1}, loss = {loss:.8f}")
            if validation is not None:
                self.validation_scores_.extend(np.asarray(scores, np.float64)[:count].tolist())
            self.n_iter_ += count
            self.t_ += count * n
            self._state = carry
            if bool(diverged):
                raise FloatingPointError(
                    f"training diverged: a non-finite cost or parameter in epoch "
                    f"{self.n_iter_ + 1}; lower learning_rate_init (got "
                    f"{self.learning_rate_init}).")
            remaining -= count
            stopped = bool(stop)
            if stopped:
                break
        if validation is not None:
            self.best_validation_score_ = float(carry["best_score"])
            self._state = dict(carry, params=carry["best_params"])
        else:
            self.best_loss_ = float(carry["best_loss"])
        if not incremental and not stopped:
            warnings.warn(f"{type(self).__name__}: max_iter = {self.max_iter} epochs reached "
                          "and the optimisation has not converged yet.", ConvergenceWarning)

    def _fit_private(self, X, Y, rng, initial) -> None:
        """DP-SGD (:func:`jaxmlp.fit` with :class:`jaxmlp.privacy.DPSGD`): Poisson-sampled
        epochs, one compiled call each, exactly ``max_iter`` of them (the accountant's and
        the calibration's count). No stop on the training loss: it is computed from the raw
        data outside the accountant, so ``tol`` and ``n_iter_no_change`` are not read and
        ``loss_curve_`` / ``best_loss_`` are recorded only (not private outputs)."""
        n = X.shape[0]
        batch, _ = self._batch(n)
        opt = self._optimizer(batch)
        params = jax.device_put(initial)
        key = jax.random.key(int(rng.randint(np.iinfo(np.int32).max)))
        state = TrainState(params, opt.init(params), key, 0)
        best = {"loss": np.inf}

        def on_epoch_end(state, row) -> bool:
            loss = float(row["running_cost"]) * _loss_scale(self._net)
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {len(self.loss_curve_)}, loss = {loss:.8f}")
            best["loss"] = min(best["loss"], loss)
            return True  # never stops on the raw cost: max_iter epochs, as calibrated

        dp = self._dp(n)
        result = jaxmlp.fit(self._net, None, opt, jnp.asarray(_columns(X, 1, "X")),
                            jnp.asarray(_columns(Y, 1, "y", self._y_limit())),
                            epochs=self.max_iter,
                            batch_size=None, key=None, state=state, on_epoch_end=on_epoch_end,
                            dp=dp)
        if result.status == "diverged":
            # result.message quotes the costs of the raw data: not printed for a private fit
            raise FloatingPointError(
                f"training diverged: the parameters or the minibatch cost became non-finite "
                f"or exploded (the values are not shown: they are computed from the training "
                f"data outside the privacy accountant); lower learning_rate_init (got "
                f"{self.learning_rate_init}).")
        self._state = result.state
        self.best_loss_ = best["loss"]
        self.n_iter_ = result.state.epoch
        self.t_ = self.n_iter_ * n
        self.noise_multiplier_ = dp.noise_multiplier
        self.sampling_rate_ = dp.sampling_rate
        self.delta_ = dp.delta
        self._private_epsilon = self.target_epsilon
        self.epsilon_ = privacy.epsilon(
            noise_multiplier=dp.noise_multiplier, sampling_rate=dp.sampling_rate,
            steps=self.n_iter_ * dp.steps_per_epoch, delta=dp.delta)

    def _init_factor(self) -> float:
        """scikit-learn's initialisation (:func:`_initial_params`): factor 6 (Glorot and
        Bengio's uniform), 2 for sigmoid hidden units."""
        return 2.0 if self.activation == "sigmoid" else 6.0

    def fit(self, X, y, sample_weight=None):
        """Trains from a new initialisation for up to ``max_iter`` epochs. ``sample_weight``
        (n_samples,), >= 0: each minibatch's cost is sum w_i L_i / sum w_i, as scikit-learn's.
        Returns self."""
        self.__dict__.pop("_state", None)
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    # ------------------------------------------------------------------ prediction

    def _outputs(self, X) -> np.ndarray:
        """A[L]^T, (n_samples, n[L]): the network's outputs for batch-first X.

        The columns are padded to the next power of two (at least 16), so predictions on
        sets of different sizes share a few compiled programs."""
        check_is_fitted(self, "_state")
        X = _dense(validate_data(self, X, reset=False, dtype=np.float64,
                                 accept_sparse=_SPARSE))
        m = X.shape[0]
        A_L = np.asarray(jaxmlp.predict(self._net, self._current_params(), _columns(X, None)),
                         dtype=np.float64)[:, :m]
        if not np.isfinite(A_L).all():
            raise ValueError(f"X: the network's outputs overflow float32 for inputs up to "
                             f"{np.abs(X).max():.4g} in magnitude; scale the data as it was "
                             f"scaled for the fit.")
        return A_L.T

    def _predictive(self, X):
        """The GLM predictive (LA10), (LA11) of ``laplace_`` at batch-first X, padded as
        :meth:`_outputs` pads: class probabilities (n_samples, n[L]) with the probit link, or
        (mean, variance), each (n_samples, n[L]), for the regressor."""
        check_is_fitted(self, "_state")
        X = _dense(validate_data(self, X, reset=False, dtype=np.float64,
                                 accept_sparse=_SPARSE))
        m = X.shape[0]
        out = self.laplace_.predictive(_columns(X, None, "X"))
        parts = [np.asarray(a, dtype=np.float64)[:, :m].T
                 for a in (out if isinstance(out, tuple) else (out,))]
        if not all(np.isfinite(a).all() for a in parts):
            raise ValueError(f"X: the predictive overflows float32 for inputs up to "
                             f"{np.abs(X).max():.4g} in magnitude; scale the data as it was "
                             f"scaled for the fit.")
        return tuple(parts) if isinstance(out, tuple) else parts[0]



class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A feedforward classifier trained with jaxmlp's hand-derived gradient.

    Softmax output and categorical cross-entropy (C2) for a label vector; sigmoid outputs
    and binary cross-entropy (C1) per label for a label-indicator matrix (multi-label). See the module
    docstring for the parameters.
    """

    _cost = "categorical_cross_entropy"
    _output_activation = "softmax"
    _validation = "accuracy"

    def _targets(self, y, *, first, classes=None):
        if y.ndim == 2 and y.shape[1] == 1:  # scikit-learn's own warning, then (n_samples,)
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self._multilabel = type_of_target(y) == "multilabel-indicator"
            # scikit-learn's: a label-indicator y gives the label indices, other classes
            # are the labels given
            self._binarizer = LabelBinarizer().fit(
                y if classes is None or self._multilabel else np.asarray(classes))
            self.classes_ = self._binarizer.classes_
            if (classes is not None and self._multilabel
                    and not np.array_equal(self.classes_, unique_labels(classes))):
                raise ValueError(f"classes: expected the label indices "
                                 f"{self.classes_.tolist()} of a label-indicator y with "
                                 f"{len(self.classes_)} columns, got "
                                 f"{np.asarray(classes).tolist()}.")
            if len(self.classes_) < 2:
                raise ValueError(f"y: expected at least 2 classes, got {len(self.classes_)} "
                                 f"class ({self.classes_[0]!r}).")
            self._cost = ("multilabel_cross_entropy" if self._multilabel
                          else "categorical_cross_entropy")
            self._output_activation = "sigmoid" if self._multilabel else "softmax"
            self._validation = "exact_match" if self._multilabel else "accuracy"
        if not self._multilabel:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if unseen.size:
                raise ValueError(f"y: labels {unseen.tolist()} are not among classes_ "
                                 f"{self.classes_.tolist()}.")
        Y = self._binarizer.transform(y).astype(np.float64)
        if not self._multilabel and Y.shape[1] == 1:  # two classes: both columns
            Y = np.hstack([1.0 - Y, Y])
        return Y

    def _sklearn_sizes(self) -> tuple:
        """scikit-learn's layer sizes: one sigmoid output unit for two classes (ours are two
        softmax units), else ours."""
        sizes = self._net.sizes
        if not self._multilabel and sizes[-1] == 2:
            return (*sizes[:-1], 1)
        return sizes

    def _stratify(self, Y) -> Optional[np.ndarray]:
        """scikit-learn stratifies the validation split when its network has one output
        (two classes, one label column): by its label-indicator column, (n, 1) bool, ours
        Y[:, 1]. Not for several classes or labels (one output each), as scikit-learn."""
        if not self._multilabel and Y.shape[1] == 2:
            return Y[:, 1:] > 0.5
        return None

    def fit(self, X, y, sample_weight=None):
        """Trains from a new initialisation for up to ``max_iter`` epochs. ``sample_weight``
        (n_samples,), >= 0: each minibatch's cost is sum w_i L_i / sum w_i, as scikit-learn's.
        Returns self."""
        return super().fit(X, y, sample_weight=sample_weight)

    @available_if(_without_laplace)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One more epoch on (X, y), continuing the optimizer's state. The first call needs
        ``classes`` (every label of the problem; for a label-indicator y, the label indices
        0, ..., n_labels - 1), as in scikit-learn; a later call's ``classes``, if given, must
        be the same. Returns self."""
        if not hasattr(self, "_state"):
            if classes is None:
                raise ValueError("classes: expected every label of the problem on the first "
                                 "call to partial_fit, got None.")
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={np.asarray(classes).tolist()!r}` is not the same as on "
                             f"last call to partial_fit, was: {self.classes_.tolist()!r}")
        return self._fit(X, y, incremental=True, classes=classes, sample_weight=sample_weight)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes): A[L]^T of the softmax (or sigmoids);
        with ``laplace``, the GLM predictive (LA11) of ``laplace_`` with the probit link,
        softmax(z / sqrt(1 + pi/8 diag Sigma)) (sigmoid per label), Sigma = J P^{-1} J^T."""
        P = (self._predictive(X) if getattr(self, "laplace_", None) is not None
             else self._outputs(X))
        if self._multilabel:  # independent labels: no sum to 1
            return P
        # The float32 softmax sums to 1 to ~1e-7 only; scikit-learn's metrics (log_loss)
        # check the float64 rows sum to 1 to ~1e-8.
        return P / P.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        """log of :meth:`predict_proba` (n_samples, n_classes), as scikit-learn's."""
        P = self.predict_proba(X)
        return np.log(P, out=P)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample (or each label above 0.5, multi-label), by
        :meth:`predict_proba` (the Laplace predictive's with ``laplace``)."""
        P = self.predict_proba(X)
        if self._multilabel:
            return self._binarizer.inverse_transform((P > 0.5).astype(int))
        return self.classes_[np.argmax(P, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A feedforward regressor (identity output, mean squared error (C3)) trained with
    jaxmlp's hand-derived gradient. ``y`` is (n_samples,) or (n_samples, n_targets);
    predictions have the same shape. See the module docstring for the parameters."""

    _cost = "mean_squared_error"
    _output_activation = "linear"
    _validation = "r2"

    @available_if(_without_laplace)
    def partial_fit(self, X, y, sample_weight=None):
        """One more epoch on (X, y), continuing the optimizer's state. Returns self."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _y_limit(self) -> float:
        """sqrt(float32's largest): the cost (C3) squares the targets."""
        return float(np.sqrt(_FLOAT32_MAX))

    def _targets(self, y, *, first, classes=None):
        y = np.asarray(y, dtype=np.float64)
        if first:
            self._y_1d = y.ndim == 1
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if not first and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} target columns as in the first "
                             f"fit, got {Y.shape[1]}.")
        if self.laplace is not None and Y.shape[1] > 1:
            scales = Y.std(axis=0)
            low, high = float(scales.min()), float(scales.max())
            if high > _LAPLACE_SCALE_RATIO * low:
                raise ValueError(
                    f"y: with laplace={self.laplace!r}, the targets' standard deviations "
                    f"range from {low:.4g} to {high:.4g}, more than a factor "
                    f"{_LAPLACE_SCALE_RATIO:g} apart: the posterior has one noise scale "
                    f"sigma_noise for every target, so return_std would be miscalibrated per "
                    f"target; standardise y's columns (e.g. sklearn.preprocessing."
                    f"StandardScaler, then scale the predicted mean and std back by each "
                    f"column's std) or fit one model per target.")
        return Y

    def predict(self, X, return_std: bool = False):
        """A[L]^T: (n_samples,) for a 1-D y at fit, else (n_samples, n_targets).

        ``return_std=True`` (needs ``laplace``): ``(mean, std)``, std the GLM predictive's
        standard deviation sqrt(diag J P^{-1} J^T + sigma_noise^2) (LA10), (LA11) in y's
        units, of the mean's shape (scikit-learn's ``BayesianRidge`` convention)."""
        if not return_std:
            out = self._outputs(X)
            return out[:, 0] if self._y_1d else out
        check_is_fitted(self, "_state")
        if getattr(self, "laplace_", None) is None:
            raise ValueError("return_std: the predictive standard deviation needs a Laplace "
                             "posterior; fit with laplace='kron' (or 'last_layer', 'diag', "
                             "'full'), got an estimator fitted with laplace=None.")
        mean, var = self._predictive(X)
        std = np.sqrt(var)
        return (mean[:, 0], std[:, 0]) if self._y_1d else (mean, std)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        return tags


_PAD = 64  # training columns are padded to a multiple of this
#: The sparse formats validate_data keeps (others, e.g. COO, become CSR); densified after.
_SPARSE = ("csr", "csc")
#: ``out_activation_`` as scikit-learn names the output activation.
_SKLEARN_ACTIVATION = {"softmax": "softmax", "sigmoid": "logistic", "linear": "identity"}


def _dense(X):
    """X as a dense ndarray: a SciPy sparse matrix densified (the network's products are
    dense), any other X as it is."""
    return X.toarray() if scipy.sparse.issparse(X) else X

#: The fitted attributes of a private fit (``target_epsilon``), removed by any other fit.
_PRIVATE_ATTRIBUTES = ("noise_multiplier_", "sampling_rate_", "epsilon_", "delta_",
                       "_private_epsilon")
#: With ``laplace``, a multi-target y whose targets' standard deviations differ by more than
#: this factor is refused (the posterior's noise scale sigma_noise is one for every target).
_LAPLACE_SCALE_RATIO = 2.0


def _laplace_max_rows(n: int) -> int:
    """The most rows the Laplace posterior of an estimator with ``laplace`` conditions on,
    n samples repeated by their integer ``sample_weight``: max(n, min(100 n, 10^7)) (never
    below the samples themselves, at unit weights)."""
    return max(n, min(100 * n, 10_000_000))
#: The ``laplace`` structures (:data:`jaxmlp.laplace.STRUCTURES`; jaxmlp.laplace is imported
#: only by a fit that asks for one).
_LAPLACE = ("kron", "last_layer", "diag", "full")
# XLA's options for the training program (:func:`_fit_program`) only; every other program
# keeps XLA's defaults. A fit compiles this one program, and most of it is small elementwise
# kernels (the matrix products go to library calls either way), so XLA's older loop emitters,
# LLVM's level-1 pipeline and one code-generation unit compile it in less time for a small
# change in run time; the results differ from the defaults' in the last bits of float32 (the
# same fitted accuracy and epochs on every set of experiments/sklearn_compare.py).
# docs/sklearn.md has the figures.
_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1,
                     "xla_cpu_parallel_codegen_split_count": 1}


def _chunk(epoch_columns: int) -> int:
    """Epochs per compiled call: 256, fewer (a power of two) when the chunk's minibatch
    indices, (chunk, num_batches, batch) int32, would pass 8 MiB."""
    return max(1, min(256, 1 << ((1 << 21) // epoch_columns).bit_length() - 1))


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _columns(A: np.ndarray, multiple: Optional[int], name: str = "X",
             limit: float = _FLOAT32_MAX) -> np.ndarray:
    """A^T as float32 (n, m'), zero columns appended: m' a multiple of ``multiple``, or the
    next power of two >= max(m, 16) for None. Values beyond ``limit`` in magnitude (float32's
    largest by default; finite in float64, not in the network's float32) are refused, a
    ValueError naming ``name``."""
    m = A.shape[0]
    width = (-(-m // multiple) * multiple if multiple is not None
             else 1 << (max(m, 16) - 1).bit_length())
    out = np.zeros((A.shape[1], width), np.float32)
    with np.errstate(over="ignore"):  # reported below
        out[:, :m] = A.T
    if A.size and not (np.isfinite(out).all() and np.abs(out).max() <= limit):
        which = ("float32's largest" if limit == _FLOAT32_MAX
                 else "the square root of float32's largest")
        raise ValueError(f"{name}: values up to {np.abs(A).max():.4g} in magnitude, beyond "
                         f"{which} number {limit:.4g} (the network computes in float32); "
                         f"scale the data (e.g. sklearn.preprocessing.StandardScaler).")
    return out


def _loss_scale(net) -> float:
    """The factor c of scikit-learn's reported loss (``loss_curve_``, ``loss_``,
    ``best_loss_`` and the stop test on it) relative to the cost J the gradient is of:
    1 / n[L] for the squared error (C3) (scikit-learn's ``squared_loss`` is
    0.5 mean_outputs mean_samples (y - p)^2, while its gradient, deltas = p - y over the
    samples, is that of J = 0.5 sum_outputs mean_samples (y - p)^2); 1 for the
    cross-entropies (summed over the labels in both)."""
    return 1.0 / net.sizes[-1] if net.cost == "mean_squared_error" else 1.0


def _initial_params(sizes, rng, factor: float) -> list:
    """scikit-learn's initialisation, drawn as it draws it (NumPy, layer by layer, from the
    estimator's ``random_state``), for the layer sizes n[0], ..., n[L]: W[l] and b[l] uniform
    on [-r, r], r = sqrt(factor / (n[l-1] + n[l])). Returns ``[{"W": (n[l], n[l-1]), "b":
    (n[l],)}, ...]`` as float32."""
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        r = np.sqrt(factor / (n_in + n_out))
        W = rng.uniform(-r, r, (n_in, n_out))  # scikit-learn's coefs_[l]: W[l]^T
        b = rng.uniform(-r, r, n_out)
        params.append({"W": np.ascontiguousarray(W.T, np.float32), "b": b.astype(np.float32)})
    return params


def _first_carry(params, opt) -> dict:
    """The carry of :func:`_fit_program`'s first call: the initial parameters, and zeros
    where ``fresh`` puts ``opt.init(params)`` (built on the host: nothing to compile)."""
    opt_state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                             jax.eval_shape(opt.init, params))
    return {"params": params, "opt_state": opt_state, "best_loss": np.float32(np.inf),
            "bad": np.int32(0), "best_score": np.float32(-np.inf), "best_params": params}


def _validation_score(net, kind: str, params, X, Y, w):
    """The early-stopping score on X (n[0], m'), Y (n[L], m') with sample weights w (m',)
    (0 on the padding columns), scikit-learn's ``score(..., sample_weight)``: ``"accuracy"``
    (the weighted share of argmax of A[L] equal to Y's), ``"exact_match"`` (every label's
    A[L] > 0.5 as Y's) or ``"r2"`` (scikit-learn's weighted R^2, averaged over the outputs)."""
    P = jaxmlp.predict(net, params, X)  # (F1), (F2): (n[L], m')
    s = jnp.sum(w)
    if kind == "accuracy":
        hit = jnp.argmax(P, axis=0) == jnp.argmax(Y, axis=0)
    elif kind == "exact_match":
        hit = jnp.all((P > 0.5) == (Y > 0.5), axis=0)
    else:
        mean = jnp.sum(Y * w, axis=1, keepdims=True) / s
        ss_res = jnp.sum(w * (Y - P) ** 2, axis=1)
        ss_tot = jnp.sum(w * (Y - mean) ** 2, axis=1)
        r2 = jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0),
                       jnp.where(ss_res > 0, 0.0, 1.0))  # scikit-learn's force_finite
        return jnp.mean(r2).astype(jnp.float32)
    return (jnp.sum(jnp.where(hit, w, 0.0)) / s).astype(jnp.float32)


@functools.lru_cache(maxsize=32)
def _fit_program(net, optimizer, batch: int, num_batches: int, chunk: int,
                 validation: Optional[str], compiler_options: tuple = ()):
    """ONE jitted function that runs up to ``chunk`` epochs of a fit, with the stop test:

    ``run(carry, fresh, idx, X, Y, SW, X_val, Y_val, W_val, limit, n, tol, patience, alpha,
    l2, hyperparams) -> (carry, losses (chunk,), scores (chunk,), epochs run, stopped,
    diverged)``.

    * ``fresh``: a new optimizer state, ``optimizer.init(params)``; else ``carry``'s.
    * ``hyperparams``: values of an ``optax.inject_hyperparams`` state (float32 scalars by
      name, :func:`_tunable_optimizer`) that replace the state's before the first epoch:
      they are arguments, not constants, so other values compile nothing; ``{}`` for an
      optimizer without them.
    * epoch e < ``limit``: ``lax.scan`` of scikit-learn's minibatch update over the
      minibatches ``idx[e]`` (num_batches, batch), column indices into X (n[0], m'),
      Y (n[L], m') and the sample weights SW (m',): ``idx[e]`` is the epoch's permutation of
      the n training columns cut as scikit-learn's ``gen_batches(n, batch)``, its last
      minibatch filled up to ``batch`` with columns of weight 0 (positions >= n). Each
      update: the weighted cost J = sum w_i L_i / s, s = sum w_i, and its gradient by the
      recurrences (:func:`jaxmlp.nn.propagation.weighted_value_and_grad_kernel`: (F1)-(F3),
      the seed, (B3), (B4), (B1), (B2)), plus scikit-learn's L2 term (alpha / 2) ||W||^2 / s
      (gradient alpha W / s; the optimizer adds ``l2`` W itself, l2 = alpha / batch, the
      rest is added to the gradient), then the optax update (``value=J``; K-FAC's factors
      from the same padded minibatch);
    * its loss, scikit-learn's: sum over the minibatches of (J c + the L2 term at the
      weights before the update) times the minibatch's sample count, divided by n, c =
      :func:`_loss_scale` (1 / n[L] for the squared error: scikit-learn's reported loss
      averages over the outputs, its gradient does not);
    * the stop test after every epoch, scikit-learn's: without validation, a loss above
      best_loss - tol counts a bad epoch; with it, a score (:func:`_validation_score` on
      X_val, Y_val with weights W_val, 0 on the padding) below best_score + tol, and the
      best-scoring parameters are kept; more than ``patience`` bad epochs in a row stop;
    * an epoch with a non-finite loss or final parameter is not kept: the loop stops with
      ``diverged`` set and the carry of the epoch before.

    ``compiler_options``: XLA's options for this program, (name, value) pairs
    (:data:`_COMPILER_OPTIONS` from the estimator).
    """

    def where(c, a, b):
        return jax.tree.map(lambda x, y: jnp.where(c, x, y), a, b)

    def total(*arrays):
        """The sum of every element of the arrays (float32), added in the order given."""
        sums = [lax.reduce_sum(a, tuple(range(a.ndim))) for a in arrays]
        out = sums[0]
        for s in sums[1:]:
            out = lax.add(out, s)
        return out

    report = np.float32(_loss_scale(net))
    # A[:, idx_s] as one gather, (n, b): the indices are a permutation's, in range, so no
    # bounds test (jnp.take's default fills out-of-range columns with NaN: a mask per gather).
    columns = lax.GatherDimensionNumbers(offset_dims=(0,), collapsed_slice_dims=(1,),
                                         start_index_map=(1,))

    def take(A, idx_s):
        return lax.gather(A, idx_s[:, None], columns, (A.shape[0], 1),
                          mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)

    def take_row(v, idx_s):
        return lax.gather(v, idx_s[:, None], lax.GatherDimensionNumbers(
            offset_dims=(), collapsed_slice_dims=(0,), start_index_map=(0,)), (1,),
            mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)

    def update(params, opt_state, X_s, Y_s, w, alpha, l2):
        """One minibatch of scikit-learn's: the weighted mean cost J = sum w_i L_i / s and
        its gradient (:func:`jaxmlp.nn.propagation.weighted_value_and_grad_kernel`), s =
        sum_i w_i (the batch's sample count without sample weights), plus the L2 term
        (alpha / 2) ||W||^2 / s, gradient alpha W / s: the optimizer adds l2 W = alpha W /
        batch itself, the difference is added here. A batch with s = 0 is skipped."""
        J, grads = weighted_value_and_grad_kernel(net, params, X_s, Y_s, w)
        s = total(w)
        some = lax.gt(s, np.float32(0.0))
        scale = lax.div(alpha, lax.select(some, s, np.float32(1.0)))
        grads = checks.like_params(grads, [
            {"W": g["W"] + (scale - l2) * p["W"], "b": g["b"]} for g, p in zip(grads, params)])
        loss = lax.add(lax.mul(J, report), lax.mul(lax.mul(np.float32(0.5), scale),
                                                   total(*(lax.integer_pow(p["W"], 2)
                                                           for p in params))))
        if needs_kfac_factors(optimizer):
            _, _, extra = kfac_update_inputs(net, optimizer, params, opt_state, X_s, Y_s)
        else:
            extra = {}
        updates, new_state = optimizer_update(optimizer, grads, opt_state, params, value=J,
                                              **extra)
        new_params = optax.apply_updates(params, updates)
        return (where(some, new_params, params), where(some, new_state, opt_state),
                lax.select(some, loss, np.float32(0.0)))

    def epoch(params, opt_state, idx, X, Y, SW, n, alpha, l2):
        positions = jnp.arange(batch, dtype=np.int32)

        def body(carry, step):
            idx_s, s = step
            valid = lax.lt(s * batch + positions, n)  # the last batch's padding: weight 0
            w = jnp.where(valid, take_row(SW, idx_s), np.float32(0.0))
            params, opt_state, loss = update(*carry, take(X, idx_s), take(Y, idx_s), w,
                                             alpha, l2)
            return (params, opt_state), lax.mul(loss, lax.convert_element_type(
                total(valid.astype(np.int32)), np.float32))

        (params, opt_state), losses = lax.scan(
            body, (params, opt_state), (idx, jnp.arange(num_batches, dtype=np.int32)))
        return params, opt_state, losses

    @functools.partial(jax.jit, compiler_options=dict(compiler_options) or None)
    def run(carry, fresh, idx, X, Y, SW, X_val, Y_val, W_val, limit, n, tol, patience, alpha,
            l2, hyperparams):
        opt_state = lax.cond(fresh, optimizer.init, lambda _: carry["opt_state"], carry["params"])
        if hyperparams:
            opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **hyperparams})
        carry = dict(carry, opt_state=opt_state)
        nan = jnp.full((chunk,), jnp.nan, jnp.float32)
        loop = (carry, nan, nan, jnp.int32(0), jnp.bool_(False), jnp.bool_(False))

        def cond(loop):
            _, _, _, i, stop, diverged = loop
            return lax.bitwise_and(lax.lt(i, limit),
                                   lax.bitwise_not(lax.bitwise_or(stop, diverged)))

        def body(loop):
            c, losses, scores, i, _, _ = loop
            params, opt_state, losses_s = epoch(
                c["params"], c["opt_state"], lax.dynamic_index_in_dim(idx, i, keepdims=False),
                X, Y, SW, n, alpha, l2)
            # scikit-learn's epoch loss: sum_s (loss of batch s) (its sample count) / n, in
            # lax (float32 throughout).
            loss = lax.div(total(losses_s), lax.convert_element_type(n, np.float32))
            # The epoch's final parameters must be finite too (0 * inf = nan).
            finite = lax.is_finite(lax.add(loss, lax.mul(np.float32(0.0), total(
                *(lax.integer_pow(p["W"], 2) for p in params), *(p["b"] for p in params)))))
            new = dict(c, params=params, opt_state=opt_state)
            if validation is None:
                bad = lax.select(lax.gt(loss, lax.sub(c["best_loss"], tol)),
                                 lax.add(c["bad"], np.int32(1)), np.int32(0))
                new.update(best_loss=lax.min(loss, c["best_loss"]), bad=bad)
                score = np.float32(np.nan)
            else:
                score = _validation_score(net, validation, params, X_val, Y_val, W_val)
                bad = jnp.where(score < c["best_score"] + tol, c["bad"] + 1, 0)
                better = score > c["best_score"]
                new.update(best_score=jnp.maximum(score, c["best_score"]), bad=bad,
                           best_params=where(better, params, c["best_params"]))
            c = lax.cond(finite, lambda: new, lambda: c)
            return (c, lax.dynamic_update_index_in_dim(losses, loss, i, 0),
                    lax.dynamic_update_index_in_dim(scores, score, i, 0),
                    lax.add(i, lax.convert_element_type(finite, np.int32)),
                    lax.gt(bad, patience), lax.bitwise_not(finite))

        carry, losses, scores, i, stop, diverged = lax.while_loop(cond, body, loop)
        return carry, losses, scores, i, stop, diverged

    return run
