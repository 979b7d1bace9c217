"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

Batch-first at the boundary, as scikit-learn, optax and Equinox users hold their data:
``X`` is (n_samples, n_features) and ``y`` is what scikit-learn gives (a label vector, a
label-indicator matrix, or a target vector or matrix). Inside it is the same library:
X is transposed ONCE to the column-major (n[0], m) of the derivations, the network is a
:class:`jaxmlp.Network`, and training is :func:`jaxmlp.fit` (one compiled call per epoch,
the hand-derived gradient (B1)-(B4) of every minibatch, an optax update).

Names follow :class:`sklearn.neural_network.MLPClassifier` where the meaning is the same
(``hidden_layer_sizes``, ``activation``, ``batch_size``, ``max_iter``, ``random_state``,
``early_stopping``, ``validation_fraction``, ``n_iter_no_change``, ``tol``,
``learning_rate_init``; fitted ``classes_``, ``n_iter_``, ``loss_curve_``,
``best_validation_score_``, ``coefs_``, ``intercepts_``). Where ours differ:

* ``optimizer`` is one of :data:`jaxmlp.train.OPTIMIZERS` (scikit-learn's ``solver``);
  ``weight_decay`` is the L2 strength on the weights W[l] only (decoupled for ``"adamw"``),
  while scikit-learn's ``alpha`` penalises the loss. ``learning_rate_init`` is the optax
  learning rate; no ``learning_rate`` schedule string.
* A classifier with one label column has a softmax output over ``classes_`` (also for two
  classes); a label-indicator ``y`` gives independent sigmoid outputs (multi-label).
* An epoch is as many minibatches as scikit-learn's, ceil(n / batch_size), all of the same
  size n // ceil(n / batch_size) (fixed shapes: one compiled epoch), drawn from a fresh
  permutation; the at most ceil(n / batch_size) - 1 samples left over sit out that epoch.
* ``coefs_[l]`` is W[l+1]^T, (n[l], n[l+1]), as scikit-learn stores it.
* ``target_epsilon`` (with ``delta`` and ``l2_norm_clip``) trains with DP-SGD
  (:class:`jaxmlp.privacy.DPSGD`): the noise multiplier is calibrated so that
  ``max_iter`` epochs of Poisson-sampled batches (expected size ``batch_size``) spend at
  most ``target_epsilon``; the fitted ``noise_multiplier_``, ``sampling_rate_`` and
  ``epsilon_`` (spent) report it. Early stopping is refused with it (the validation split
  would be read outside the accountant).
"""

from __future__ import annotations

import functools
import numbers
import warnings
from typing import Any, Optional

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

__all__ = ["MLPClassifier", "MLPRegressor"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}.")
    return int(value)


@functools.lru_cache(maxsize=32)
def _optimizer(name, learning_rate, weight_decay):
    """One optax optimizer object per setting: fits with the same setting reuse the compiled
    epoch of :func:`jaxmlp.train.make_train_epoch` (a grid search compiles once per point)."""
    from jaxmlp import train

    return train.make_optimizer(name, learning_rate, weight_decay=weight_decay)


def _hidden_sizes(value: Any) -> tuple:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        sizes = tuple(value)
    except TypeError:
        raise ValueError(f"hidden_layer_sizes: expected a tuple of positive integers, got "
                         f"{value!r}.") from None
    return tuple(_positive_int(f"hidden_layer_sizes[{i}]", n) for i, n in enumerate(sizes))


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the fit loop, prediction."""

    _output_activation: str
    _cost: str

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation: str = "relu",
        *,
        optimizer: str = "adam",
        learning_rate_init: float = 1e-3,
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
        l2_norm_clip: float = 1.0,
        verbose: bool = False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
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
        self.verbose = verbose

    # ------------------------------------------------------------------ the boundary

    def _targets(self, y: np.ndarray, *, first: bool, classes=None) -> np.ndarray:
        """y as scikit-learn gives it -> Y (n_samples, n[L]) of the network's cost."""
        raise NotImplementedError

    def _network(self, n_features: int, n_outputs: int):
        import jaxmlp

        if self.activation not in jaxmlp.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(jaxmlp.ACTIVATIONS)}, got "
                             f"{self.activation!r}.")
        sizes = (n_features, *_hidden_sizes(self.hidden_layer_sizes), n_outputs)
        acts = (self.activation,) * (len(sizes) - 2) + (self._output_activation,)
        return jaxmlp.Network(sizes=sizes, activations=acts, cost=self._cost)

    def _batch(self, n: int) -> int:
        """Equal minibatches, as many per epoch as scikit-learn's: ceil(n / b) of n // that."""
        b = 200 if self.batch_size == "auto" else _positive_int("batch_size", self.batch_size)
        return n // -(-n // min(b, n))

    def _check_settings(self) -> None:
        _positive_int("max_iter", self.max_iter)
        _positive_int("n_iter_no_change", self.n_iter_no_change)
        if not (isinstance(self.validation_fraction, numbers.Real)
                and 0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction: expected a number in (0, 1), got "
                             f"{self.validation_fraction!r}.")
        if self.target_epsilon is not None and self.early_stopping:
            raise ValueError("early_stopping: not with target_epsilon (the validation split "
                             "would be read outside the privacy accountant); got True.")

    # ------------------------------------------------------------------ training

    def _optimizer(self):
        try:
            return _optimizer(self.optimizer, self.learning_rate_init, self.weight_decay)
        except TypeError:  # an unhashable setting: make_optimizer says what is wrong with it
            from jaxmlp import train

            return train.make_optimizer(self.optimizer, self.learning_rate_init,
                                        weight_decay=self.weight_decay)

    def _dp(self, n: int):
        """The DP-SGD settings of a run of ``max_iter`` epochs at rate batch_size / n."""
        if self.target_epsilon is None:
            return None
        from jaxmlp import privacy

        b = 200 if self.batch_size == "auto" else _positive_int("batch_size", self.batch_size)
        q = min(b, n) / n  # Poisson sampling: batch_size is the expected batch
        delta = self.delta if self.delta is not None else min(1e-5, 0.1 / n)
        spe = privacy.default_steps_per_epoch(q)
        sigma = privacy.calibrate_noise(target_epsilon=self.target_epsilon, delta=delta,
                                        sampling_rate=q, steps=self.max_iter * spe)
        return privacy.DPSGD(l2_norm_clip=self.l2_norm_clip, noise_multiplier=sigma,
                             sampling_rate=q, delta=delta, steps_per_epoch=spe,
                             target_epsilon=self.target_epsilon)

    def _fit(self, X, y, *, incremental: bool, classes=None):
        import jax
        import jax.numpy as jnp

        import jaxmlp
        from jaxmlp.train import TrainState

        self._check_settings()
        first = not (incremental and hasattr(self, "_state"))
        if incremental and self.target_epsilon is not None:
            raise ValueError("partial_fit: not with target_epsilon (the accountant needs the "
                             "whole run's steps); use fit.")
        X, y = validate_data(self, X, y, reset=first, multi_output=True, dtype=np.float64,
                             y_numeric=isinstance(self, RegressorMixin))
        if X.shape[0] < 2:
            raise ValueError(f"X: expected at least 2 samples, got n_samples = {X.shape[0]}.")
        Y = self._targets(y, first=first, classes=classes)
        rng = check_random_state(self.random_state)
        X_val = Y_val = None
        if self.early_stopping and not incremental:
            n_val = max(1, int(round(self.validation_fraction * X.shape[0])))
            if X.shape[0] - n_val < 1:
                raise ValueError(f"validation_fraction: leaves no training sample of "
                                 f"{X.shape[0]}; got {self.validation_fraction}.")
            order = rng.permutation(X.shape[0])
            X_val, Y_val = X[order[:n_val]], Y[order[:n_val]]
            X, Y = X[order[n_val:]], Y[order[n_val:]]
        n = X.shape[0]
        batch = self._batch(n)
        # Column-major from here on: (n[0], m) and (n[L], m), transposed once.
        Xc = jnp.asarray(X.T, jnp.float32)
        Yc = jnp.asarray(Y.T, jnp.float32)
        if first:
            self._net = self._network(X.shape[1], Y.shape[1])
            seed = int(rng.randint(np.iinfo(np.int32).max))
            k_init, k_run = jax.random.split(jax.random.key(seed))
            params = jaxmlp.init_params(self._net, k_init)
            opt = self._optimizer()
            self._state = TrainState(params, opt.init(params), k_run, 0)
            self.loss_curve_ = []
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf
        else:
            opt = self._optimizer()
        epochs = 1 if incremental else _positive_int("max_iter", self.max_iter)
        best = {"score": -np.inf, "params": None, "bad": 0, "loss": np.inf}

        def on_epoch_end(state, row) -> bool:
            loss = float(row["running_cost"])
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {len(self.loss_curve_)}, loss = {loss:.8f}")
            if X_val is None:
                improved = loss < best["loss"] - self.tol
                best["loss"] = min(best["loss"], loss)
            else:
                score = self._score_columns(state.params, X_val, Y_val)
                self.validation_scores_.append(score)
                improved = score > best["score"] + self.tol
                if score > best["score"]:
                    best["score"], best["params"] = score, state.params
            best["bad"] = 0 if improved else best["bad"] + 1
            return incremental or best["bad"] <= self.n_iter_no_change

        start = self._state.epoch
        dp = self._dp(n)
        result = jaxmlp.fit(
            self._net, None, opt, Xc, Yc, epochs=start + epochs,
            batch_size=None if self.target_epsilon is not None else batch,
            key=None, state=self._state, on_epoch_end=on_epoch_end,
            dp=dp,
        )
        if result.status == "diverged":
            raise FloatingPointError(f"training diverged: {result.message}; lower "
                                     f"learning_rate_init (got {self.learning_rate_init}).")
        self._state = result.state
        if best["params"] is not None:
            self._state = self._state._replace(params=best["params"])
            self.best_validation_score_ = best["score"]
        self.best_loss_ = min(self.best_loss_, best["loss"])
        self.n_iter_ = self._state.epoch
        if dp is not None:
            from jaxmlp import privacy

            self.noise_multiplier_ = dp.noise_multiplier
            self.sampling_rate_ = dp.sampling_rate
            self.epsilon_ = privacy.epsilon(
                noise_multiplier=dp.noise_multiplier, sampling_rate=dp.sampling_rate,
                steps=self.n_iter_ * dp.steps_per_epoch, delta=dp.delta)
        if not incremental and result.status == "completed":
            warnings.warn(f"{type(self).__name__}: max_iter = {self.max_iter} epochs reached "
                          "and the optimisation has not converged yet.", ConvergenceWarning)
        params = self._state.params
        self.coefs_ = [np.asarray(p["W"]).T for p in params]
        self.intercepts_ = [np.asarray(p["b"]) for p in params]
        self.n_layers_ = len(params) + 1
        self.n_outputs_ = self._net.sizes[-1]
        self.out_activation_ = self._output_activation
        return self

    def fit(self, X, y):
        """Trains from a new initialisation for up to ``max_iter`` epochs. Returns self."""
        self.__dict__.pop("_state", None)
        return self._fit(X, y, incremental=False)

    # ------------------------------------------------------------------ prediction

    def _outputs(self, X) -> np.ndarray:
        """A[L]^T, (n_samples, n[L]): the network's outputs for batch-first X."""
        import jax.numpy as jnp

        import jaxmlp

        check_is_fitted(self, "_state")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        A_L = jaxmlp.predict(self._net, self._state.params, jnp.asarray(X.T, jnp.float32))
        return np.asarray(A_L, dtype=np.float64).T

    def _score_columns(self, params, X, Y) -> float:
        raise NotImplementedError



class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A feedforward classifier trained with jaxmlp's hand-derived gradient.

    Softmax output and categorical cross-entropy (C2) for a label vector; sigmoid outputs
    and binary cross-entropy (C1) per label for a label-indicator matrix (multi-label). See the module
    docstring for the parameters.
    """

    _cost = "categorical_cross_entropy"
    _output_activation = "softmax"

    def _targets(self, y, *, first, classes=None):
        if y.ndim == 2 and y.shape[1] == 1:  # scikit-learn's own warning, then (n_samples,)
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self._multilabel = type_of_target(y) == "multilabel-indicator"
            self._binarizer = LabelBinarizer().fit(y if classes is None else np.asarray(classes))
            self.classes_ = self._binarizer.classes_
            if len(self.classes_) < 2:
                raise ValueError(f"y: expected at least 2 classes, got {len(self.classes_)} "
                                 f"class ({self.classes_[0]!r}).")
            self._cost = ("multilabel_cross_entropy" if self._multilabel
                          else "categorical_cross_entropy")
            self._output_activation = "sigmoid" if self._multilabel else "softmax"
        if not self._multilabel:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if unseen.size:
                raise ValueError(f"y: labels {unseen.tolist()} are not among classes_ "
                                 f"{self.classes_.tolist()}.")
        Y = self._binarizer.transform(y).astype(np.float64)
        if not self._multilabel and Y.shape[1] == 1:  # two classes: both columns
            Y = np.hstack([1.0 - Y, Y])
        return Y

    def fit(self, X, y):
        """Trains from a new initialisation for up to ``max_iter`` epochs. Returns self."""
        return super().fit(X, y)

    def partial_fit(self, X, y, classes=None):
        """One more epoch on (X, y), continuing the optimizer's state. The first call needs
        ``classes`` (every label of the problem), as in scikit-learn. Returns self."""
        if not hasattr(self, "_state") and classes is None:
            raise ValueError("classes: expected every label of the problem on the first call "
                             "to partial_fit, got None.")
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes): A[L]^T of the softmax (or sigmoids)."""
        return self._outputs(X)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample (or each label above 0.5, multi-label)."""
        P = self._outputs(X)
        if self._multilabel:
            return self._binarizer.inverse_transform((P > 0.5).astype(int))
        return self.classes_[np.argmax(P, axis=1)]

    def _score_columns(self, params, X, Y) -> float:
        import jax.numpy as jnp

        import jaxmlp

        P = np.asarray(jaxmlp.predict(self._net, params, jnp.asarray(X.T, jnp.float32))).T
        if self._multilabel:
            return float(np.mean(np.all((P > 0.5) == (Y > 0.5), axis=1)))
        return float(np.mean(np.argmax(P, 1) == np.argmax(Y, 1)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A feedforward regressor (identity output, mean squared error (C3)) trained with
    jaxmlp's hand-derived gradient. ``y`` is (n_samples,) or (n_samples, n_targets);
    predictions have the same shape. See the module docstring for the parameters."""

    _cost = "mean_squared_error"
    _output_activation = "linear"

    def partial_fit(self, X, y):
        """One more epoch on (X, y), continuing the optimizer's state. Returns self."""
        return self._fit(X, y, incremental=True)

    def _targets(self, y, *, first, classes=None):
        y = np.asarray(y, dtype=np.float64)
        if first:
            self._y_1d = y.ndim == 1
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if not first and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} target columns as in the first "
                             f"fit, got {Y.shape[1]}.")
        return Y

    def predict(self, X) -> np.ndarray:
        """A[L]^T: (n_samples,) for a 1-D y at fit, else (n_samples, n_targets)."""
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _score_columns(self, params, X, Y) -> float:
        import jax.numpy as jnp

        import jaxmlp
        from sklearn.metrics import r2_score

        P = np.asarray(jaxmlp.predict(self._net, params, jnp.asarray(X.T, jnp.float32))).T
        return float(r2_score(Y, P))
