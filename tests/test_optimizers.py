"""jaxmlp.train.optimizers: each name's first updates against its rule written out by hand,
the schedules' learning rates against their formulas, weight decay on the W[l] only, K-FAC's
adaptive form and the refusals (argument named, expected vs given); check_opt_state's picture
of a wrong state. Host-sized pytrees, no network compiled."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmlp.train import optimizers as O

# one layer's worth of params: W (2, 3), b (2,)
W0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
B0 = np.array([0.1, -0.2])
GW = np.array([[0.3, -0.6, 0.9], [-1.2, 0.4, 0.05]])
GB = np.array([0.7, -0.1])


def _params():
    return [{"W": jnp.asarray(W0), "b": jnp.asarray(B0)}]


def _grads():
    return [{"W": jnp.asarray(GW), "b": jnp.asarray(GB)}]


def _updates(opt, steps, grads=None):
    """The updates of ``steps`` calls with the same gradients (GW, GB unless ``grads``),
    params held fixed."""
    params = _params()
    grads = _grads() if grads is None else grads
    state = opt.init(params)
    out = []
    for t in range(steps):
        u, state = opt.update(grads, state, params)
        out.append([{k: np.asarray(v) for k, v in layer.items()} for layer in u])
    return out


def test_sgd_momentum_nesterov_follow_their_rules():
    lr, mu = 0.1, 0.9
    (u,) = _updates(O.make_optimizer("sgd", lr), 1)
    assert np.allclose(u[0]["W"], -lr * GW) and np.allclose(u[0]["b"], -lr * GB)
    # heavy ball: v_t = g + mu v_{t-1}, update -lr v_t; constant g: v_2 = (1 + mu) g
    u1, u2 = _updates(O.make_optimizer("momentum", lr, momentum=mu), 2)
    assert np.allclose(u1[0]["W"], -lr * GW) and np.allclose(u2[0]["W"], -lr * (1 + mu) * GW)
    # Nesterov: update -lr (g + mu v_t): first step (1 + mu) g, second (1 + mu + mu^2) g
    n1, n2 = _updates(O.make_optimizer("nesterov", lr, momentum=mu), 2)
    assert np.allclose(n1[0]["W"], -lr * (1 + mu) * GW)
    assert np.allclose(n2[0]["W"], -lr * (1 + mu + mu ** 2) * GW)


def test_adam_and_rmsprop_first_steps():
    lr = 0.01
    (u,) = _updates(O.make_optimizer("adam", lr), 1)
    # bias-corrected m / sqrt(v) = g / |g| on the first step (eps = 1e-8)
    assert np.allclose(u[0]["W"], -lr * GW / (np.abs(GW) + 1e-8))
    (r,) = _updates(O.make_optimizer("rmsprop", lr), 1)
    # optax.rmsprop: nu = (1 - 0.9) g^2 (decay 0.9, eps 1e-8 inside the root)
    assert np.allclose(r[0]["b"], -lr * GB / np.sqrt(0.1 * GB ** 2 + 1e-8))


def test_weight_decay_on_weights_only():
    lr, wd = 0.1, 0.5
    (u,) = _updates(O.make_optimizer("sgd", lr, weight_decay=wd), 1)
    assert np.allclose(u[0]["W"], -lr * (GW + wd * W0))  # gradient of (wd/2) ||W||^2 added
    assert np.allclose(u[0]["b"], -lr * GB)  # never on b
    (a,) = _updates(O.make_optimizer("adamw", lr, weight_decay=wd), 1)
    assert np.allclose(a[0]["W"], -lr * (GW / (np.abs(GW) + 1e-8) + wd * W0))  # decoupled
    assert np.allclose(a[0]["b"], -lr * GB / (np.abs(GB) + 1e-8))


def test_schedules_follow_their_formulas():
    lr, T = 0.5, 40
    ones = [{"W": jnp.ones((2, 3)), "b": jnp.ones(2)}]
    steps = 6

    def rates(name):
        horizon = None if name == "constant" else T
        return [-u[0]["b"][0] for u in _updates(O.make_optimizer("sgd", lr, schedule=name,
                                                                 total_steps=horizon), steps, ones)]

    cosine = [lr * 0.5 * (1 + math.cos(math.pi * t / T)) for t in range(steps)]
    assert np.allclose(rates("cosine"), cosine)
    warm = T // 20  # 5 % of the run, linear from 0
    expected = [lr * t / warm if t < warm
                else lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / (T - warm)))
                for t in range(steps)]
    got = rates("warmup_cosine")
    assert got[0] == 0.0 and np.isclose(max(got), lr)
    assert np.allclose(got, expected)
    assert np.allclose(rates("constant"), [lr] * steps)


def test_learning_rate_as_a_0d_array_and_refusals():
    opt = O.make_optimizer("sgd", jnp.asarray(0.2))  # a rate held in a state: taken as it is
    (u,) = _updates(opt, 1)
    assert np.allclose(u[0]["W"], -0.2 * GW)
    with pytest.raises(TypeError, match=r"learning_rate: expected a number > 0 or a 0-d floating "
                                        r"array, got an array of shape \(2,\)"):
        O.make_optimizer("sgd", jnp.ones(2))
    with pytest.raises(TypeError, match="learning_rate: expected a number > 0 or a 0-d floating "
                                        "array, got an array of shape .* and dtype int"):
        O.make_optimizer("sgd", jnp.asarray(3))


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(name="lbfgs", learning_rate=0.1), ValueError,
     r"optimizer: expected one of \['sgd', .*'kfac'\], got 'lbfgs'"),
    (dict(name=None, learning_rate=0.1), ValueError, "optimizer: expected one of .* got None"),
    (dict(name="sgd", learning_rate=0.0), ValueError, r"learning_rate: expected a number > 0, got 0.0"),
    (dict(name="sgd", learning_rate="0.1"), TypeError, "learning_rate: expected a real number, got '0.1'"),
    (dict(name="sgd", learning_rate=0.1, schedule="step"), ValueError,
     r"schedule: expected one of \['constant', 'cosine', 'warmup_cosine'\], got 'step'"),
    (dict(name="sgd", learning_rate=0.1, schedule="cosine"), ValueError,
     "total_steps: expected a positive integer for schedule 'cosine' .* got None"),
    (dict(name="sgd", learning_rate=0.1, schedule="cosine", total_steps=0), ValueError, "total_steps"),
    (dict(name="sgd", learning_rate=0.1, weight_decay=-1.0), ValueError,
     "weight_decay: expected a number >= 0, got -1.0"),
    (dict(name="momentum", learning_rate=0.1, momentum=1.0), ValueError,
     r"momentum: expected a number in \[0, 1\), got 1.0"),
    (dict(name="kfac", learning_rate=0.1, kfac_adaptive="yes"), TypeError,
     "kfac_adaptive: expected True or False, got 'yes'"),
    (dict(name="kfac", learning_rate=0.1, kfac_adaptive=True), ValueError,
     "learning_rate: K-FAC's quadratic model chooses it with kfac_adaptive=True; pass None, got 0.1"),
    (dict(name="kfac", learning_rate=None, kfac_adaptive=True, schedule="cosine"), ValueError,
     "schedule: K-FAC's quadratic model chooses the learning rate .* expected 'constant', got 'cosine'"),
    (dict(name="kfac", learning_rate=None, kfac_adaptive=True, weight_decay=-0.1), ValueError,
     "weight_decay"),
    (dict(name="sgd", learning_rate=None), TypeError, "learning_rate: expected a real number, got None"),
    # options another optimizer would ignore without a word
    (dict(name="sgd", learning_rate=0.1, momentum=0.5), ValueError,
     r"momentum: used by 'momentum' and 'nesterov' only; got momentum=0.5 with 'sgd' "
     r"\(for heavy-ball SGD pass name='momentum'\)"),
    (dict(name="adam", learning_rate=0.1, momentum=0.0), ValueError, "momentum: used by"),
    (dict(name="adam", learning_rate=0.1, total_steps=100), ValueError,
     r"total_steps: the horizon of a schedule, .* got total_steps=100 with schedule='constant'"),
])
def test_bad_settings_refused_by_name(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        O.make_optimizer(**kwargs)


def test_every_name_builds_a_transformation():
    for name in O.OPTIMIZERS:
        opt = O.make_optimizer(name, None if name == "kfac" else 0.1,
                               kfac_adaptive=name == "kfac")
        assert O.check_optimizer(opt) is opt
    # K-FAC's adaptive form holds no learning rate of its own; the fixed form does
    fixed = O.make_optimizer("kfac", 0.1, schedule="cosine", total_steps=10)
    assert callable(fixed.init) and callable(fixed.update)


def test_check_optimizer_refuses_other_objects():
    with pytest.raises(TypeError, match=r"optimizer: expected an optax.GradientTransformation "
                                        r"\(with .init and .update\), got function"):
        O.check_optimizer(lambda g: g)


def test_check_opt_state_pictures_what_it_got():
    opt = optax.adam(0.1)
    params = _params()
    want = "optimizer.init(params) = (ScaleByAdamState(count, mu, nu), EmptyState())"
    for bad, picture in (([1, 2], "[2 items]"), ({"mu": 1, "nu": 2}, "{mu, nu}"),
                         (jnp.zeros(3), "array(3,)"), (7, "int"),
                         (((1, (2,)), 3), "((int, (...)), int)")):
        with pytest.raises(ValueError) as e:
            O.check_opt_state(opt, params, bad)
        assert want in str(e.value) and f"got {picture};" in str(e.value), str(e.value)
    state = opt.init(params)
    O.check_opt_state(opt, params, state)  # its own state passes
    wrong = jax.tree.map(lambda a: a.astype(jnp.float32) if a.ndim else a, state)
    with pytest.raises(ValueError, match=r"opt_state\[0\]\.mu\[0\]\['W'\]: expected shape "
                                         r"\(2, 3\) float64 .* got shape \(2, 3\) float32"):
        O.check_opt_state(opt, params, wrong)
