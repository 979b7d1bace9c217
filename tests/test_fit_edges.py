"""Edges of jaxmlp.fit and jaxmlp.train.ensemble: refusals of combinations that would be
silently wrong (injected rate schedules with per-member rates, eval sets overwriting the
loop's own entries, a resumed ensemble trained the other way, rates given with a resumed
state, optimizers whose update needs what the step does not pass), K-FAC in half precision
and in ensembles."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.train import ensemble as E
from jaxmlp.train import kfac as K
from jaxmlp.train import monitor

NET = jaxmlp.Network((4, 6, 3), ("tanh", "softmax"), "categorical_cross_entropy")
RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 24)).astype(np.float32)
Y = np.eye(3, dtype=np.float32)[:, RNG.integers(0, 3, 24)]
P0 = jaxmlp.init_params(NET, jax.random.PRNGKey(0))


def _maxdiff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ----------------------------------------------------------------------------- 1. schedules


def test_per_member_rates_refused_with_an_injected_schedule():
    P = E.init_ensemble(NET, 0, 3)
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(1e-3, 1e-4, 100))
    with pytest.raises(ValueError, match=r"learning_rates: the optimizer's injected learning_rate "
                                         r"is a schedule.*make_ensemble_optimizer"):
        E.init_opt_state(opt, P, [1e-3, 2e-3, 3e-3])
    with pytest.raises(ValueError, match=r"^learning_rates: .*schedule"):
        jaxmlp.fit(NET, P, opt, X, Y, epochs=1, batch_size=8, key=0, ensemble=3,
                   learning_rates=[1e-3, 2e-3, 3e-3])
    # a constant injected rate keeps the members' rates: the state holds them
    const = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    s = E.init_opt_state(const, P, [1e-3, 2e-3, 3e-3])
    np.testing.assert_allclose(np.asarray(s.hyperparams["learning_rate"]), [1e-3, 2e-3, 3e-3],
                               rtol=1e-6)


def test_no_rate_state_message_says_a_number_not_a_schedule():
    with pytest.raises(TypeError, match=r"optimizer: per-member learning_rates need an optimizer "
                                        r"that holds a constant learning rate.*not a schedule"):
        E.init_opt_state(optax.adam(1e-3), E.init_ensemble(NET, 0, 2), [1e-3, 2e-3])


# ----------------------------------------------------------------------------- 2. eval set names


def test_reserved_set_names_are_the_prefixes_of_the_loop_entries():
    assert {"running", "first"} <= set(monitor.RESERVED_SET_NAMES)
    for name in monitor.RESERVED_SET_NAMES:
        assert any(e.startswith(name + "_") for e in monitor.LOOP_ENTRIES)
    assert "train" not in monitor.RESERVED_SET_NAMES and "test" not in monitor.RESERVED_SET_NAMES


@pytest.mark.parametrize("name", ["running", "first"])
def test_eval_set_names_of_loop_entries_refused(name):
    msg = rf"eval_sets: the name '{name}' is reserved.*{name}_cost.*reserved names"
    with pytest.raises(ValueError, match=msg):
        jaxmlp.fit(NET, P0, optax.sgd(0.1), X, Y, epochs=1, batch_size=8, key=0,
                   eval_sets={name: (X, Y)})
    with pytest.raises(ValueError, match=msg):
        jaxmlp.fit(NET, E.init_ensemble(NET, 0, 2), optax.sgd(0.1), X, Y, epochs=1,
                   batch_size=8, key=0, ensemble=2, eval_sets={"test": (X, Y), name: (X, Y)})


# ----------------------------------------------------------------------------- 3, 4. resuming


def test_resumed_ensemble_key_must_match_shared_batches():
    P = E.init_ensemble(NET, 0, 3)
    opt_state = E.init_opt_state(optax.sgd(0.1), P)
    for one_key in (jax.random.PRNGKey(1), jax.random.key(1)):  # raw (2,), typed ()
        shared = jaxmlp.train.TrainState(P, opt_state, one_key, 1)
        with pytest.raises(ValueError, match=r"state\.key: holds one shuffle key.*trained with "
                                             r"shared batches.*shared_batches=True"):
            jaxmlp.fit(NET, P, optax.sgd(0.1), X, Y, epochs=2, batch_size=8, key=1, ensemble=3,
                       state=shared)
    for own_keys in (E.member_keys(jax.random.PRNGKey(1), 3), jax.random.split(jax.random.key(1), 3)):
        own = jaxmlp.train.TrainState(P, opt_state, own_keys, 1)
        with pytest.raises(ValueError, match=r"state\.key: holds the 3 members' own shuffle keys.*"
                                             r"shared_batches=False"):
            jaxmlp.fit(NET, P, optax.sgd(0.1), X, Y, epochs=2, batch_size=8, key=1, ensemble=3,
                       state=own, shared_batches=True)
    bad = jaxmlp.train.TrainState(P, opt_state, jnp.zeros((2, 2), jnp.uint32), 1)
    with pytest.raises(ValueError, match=r"state\.key: expected the 3 members' shuffle keys"):
        jaxmlp.fit(NET, P, optax.sgd(0.1), X, Y, epochs=2, batch_size=8, key=1, ensemble=3,
                   state=bad)


def test_learning_rates_with_a_resumed_state_refused_unless_the_states():
    P = E.init_ensemble(NET, 0, 2)
    opt = E.make_ensemble_optimizer("sgd", 0.1)
    state = jaxmlp.train.TrainState(P, E.init_opt_state(opt, P, [0.1, 0.05]),
                                    E.member_keys(1, 2), 1)
    with pytest.raises(ValueError, match=r"learning_rates: a resumed state carries its members' "
                                         r"rates.*0\.05.*given \[0\.2, 0\.3\]"):
        jaxmlp.fit(NET, P, opt, X, Y, epochs=2, batch_size=8, key=1, ensemble=2,
                   learning_rates=[0.2, 0.3], state=state)
    plain = state._replace(opt_state=E.init_opt_state(optax.sgd(0.1), P))
    with pytest.raises(ValueError, match=r"learning_rates: a resumed state carries .*no learning rates"):
        jaxmlp.fit(NET, P, optax.sgd(0.1), X, Y, epochs=2, batch_size=8, key=1, ensemble=2,
                   learning_rates=[0.1, 0.1], state=plain)
    # the state's own rates are accepted, and the run goes on with them
    fr = jaxmlp.fit(NET, P, opt, X, Y, epochs=2, batch_size=8, key=1, ensemble=2,
                    learning_rates=[0.1, 0.05], state=state)
    assert fr.status == "completed" and fr.state.epoch == 2
    np.testing.assert_allclose(np.asarray(fr.state.opt_state.hyperparams["learning_rate"]),
                               [0.1, 0.05], rtol=1e-6)


# ----------------------------------------------------------------------------- 5. K-FAC half precision


@pytest.mark.slow  # two K-FAC compilations; the bf16 update itself is checked below, unmarked
@pytest.mark.parametrize("dtype, kw", [(jnp.bfloat16, {}),  # (K2) by LU
                                       (jnp.float16, {"adaptive_damping": True})])  # (K2e) eigh
def test_kfac_trains_half_precision_params(dtype, kw):
    p = jax.tree.map(lambda a: a.astype(dtype), P0)
    fr = jaxmlp.fit(NET, p, K.kfac(0.1, kind="empirical", **kw), X.astype(dtype),
                    Y.astype(dtype), epochs=1, batch_size=8, key=0)
    assert fr.status == "completed", fr.message
    assert fr.state.params[0]["W"].dtype == dtype
    assert np.isfinite(fr.history[-1]["running_cost"])
    assert _maxdiff(fr.state.params, p) > 0  # it trained


def test_kfac_bf16_update_is_the_float32_inverse_cast_back():
    """(K2)-(K4), first step (w_1 = 1, inverses built): delta = -alpha G_inv [dW db] A_inv with
    the damped inverses computed in float32 from the bf16 factors and cast to bf16."""
    bf = jnp.bfloat16
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: a.astype(bf), P0)
    grads = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), bf), params)
    factors = []
    for layer in params:
        n, q = layer["W"].shape
        Ma, Mg = rng.normal(size=(q + 1, q + 1)), rng.normal(size=(n, n))
        factors.append((jnp.asarray(Ma @ Ma.T / (q + 1) + np.eye(q + 1), bf),
                        jnp.asarray(Mg @ Mg.T / n + np.eye(n), bf)))
    alpha, lam = 0.1, 1e-2
    opt = K.kfac(alpha, damping=lam, kl_clip=None)
    updates, _ = jax.jit(lambda g, s, p: opt.update(g, s, p, kfac_factors=factors))(
        grads, opt.init(params), params)
    for g, (A, G), u in zip(grads, factors, updates):
        A32, G32 = np.asarray(A, np.float32), np.asarray(G, np.float32)
        pi = np.sqrt((np.trace(A32) / len(A32)) / (np.trace(G32) / len(G32)))
        s = np.float32(np.sqrt(lam))
        A_inv = np.linalg.inv(A32 + pi * s * np.eye(len(A32), dtype=np.float32))
        G_inv = np.linalg.inv(G32 + s / pi * np.eye(len(G32), dtype=np.float32))
        A_inv = np.asarray(jnp.asarray(A_inv, bf), np.float32)  # cast back, as the optimizer
        G_inv = np.asarray(jnp.asarray(G_inv, bf), np.float32)
        Gam = np.concatenate([np.asarray(g["W"], np.float32),
                              np.asarray(g["b"], np.float32)[:, None]], axis=1)
        want = -alpha * (G_inv @ Gam @ A_inv)
        got = np.concatenate([np.asarray(u["W"], np.float32),
                              np.asarray(u["b"], np.float32)[:, None]], axis=1)
        assert u["W"].dtype == bf
        scale = np.max(np.abs(want))
        assert np.max(np.abs(got - want)) <= 4e-2 * scale  # bfloat16: 8 significant bits


# ----------------------------------------------------------------------------- 6. K-FAC ensembles


@pytest.mark.slow  # K + 1 K-FAC fits in float64
def test_kfac_ensemble_members_are_their_own_kfac_runs_in_float64():
    net = jaxmlp.Network((3, 5, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    rng = np.random.default_rng(2)
    Xd = rng.normal(size=(3, 24))
    Yd = np.eye(2)[:, rng.integers(0, 2, 24)]
    P = jax.tree.map(lambda a: a.astype(jnp.float64), E.init_ensemble(net, 0, 2))
    opt = K.kfac(0.1, kind="empirical", curvature_every=1, inverse_every=2)
    fr = jaxmlp.fit(net, P, opt, Xd, Yd, epochs=1, batch_size=8, key=1, ensemble=2)
    assert fr.status == "completed" and fr.state.params[0]["W"].dtype == jnp.float64
    keys = E.member_keys(1, 2)
    for k in range(2):
        single = jaxmlp.fit(net, E.member(P, k), opt, Xd, Yd, epochs=1, batch_size=8, key=keys[k])
        assert _maxdiff(single.state.params, E.member(fr.state.params, k)) < 1e-10


def test_kfac_still_refused_with_dp_and_per_member_rate_state():
    with pytest.raises(ValueError, match=r"optimizer: K-FAC is not available with dp"):
        jaxmlp.fit(NET, P0, K.kfac(0.1), X, Y, epochs=1, key=0,
                   dp=jaxmlp.privacy.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0,
                                           sampling_rate=0.5, delta=1e-3))
    with pytest.raises(ValueError, match=r"optimizer: 'kfac' is not available for ensembles "
                                         r"with per-member rates.*got 'kfac'"):
        E.make_ensemble_optimizer("kfac", 0.1)
    with pytest.raises(TypeError, match=r"optimizer: per-member learning_rates need"):
        jaxmlp.fit(NET, E.init_ensemble(NET, 0, 2), K.kfac(0.1), X, Y, epochs=1, batch_size=8,
                   key=0, ensemble=2, learning_rates=[0.1, 0.2])


# ----------------------------------------------------------------------------- 7. messages


def test_eval_set_shape_and_dtype_errors_name_the_set():
    with pytest.raises(ValueError, match=re.escape("eval_sets['test'] X: expected shape (n[0], m) = (4, m)")):
        jaxmlp.fit(NET, P0, optax.sgd(0.1), X, Y, epochs=1, batch_size=8, key=0,
                   eval_sets={"test": (X.T, Y)})
    with pytest.raises(ValueError, match=re.escape("eval_sets['test'] Y: expected shape (n[L], m) = (3, 24)")):
        jaxmlp.fit(NET, P0, optax.sgd(0.1), X, Y, epochs=1, batch_size=8, key=0,
                   eval_sets={"test": (X, Y.T)})
    with pytest.raises(TypeError, match=re.escape("eval_sets['test'] X: expected dtype float32")):
        jaxmlp.fit(NET, P0, optax.sgd(0.1), X, Y, epochs=1, batch_size=8, key=0,
                   eval_sets={"test": (X.astype(np.float64), Y)})


def test_optimizers_needing_what_the_step_does_not_pass_refused_by_name():
    with pytest.raises(TypeError, match=r"optimizer: its update needs 'obj_fn', which the training "
                                        r"step does not give.*obj_fn must be provided"):
        jaxmlp.fit(NET, P0, optax.contrib.sophia(1e-3), X, Y, epochs=1, batch_size=8, key=0)
    sam = optax.contrib.sam(optax.sgd(0.1), optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"optimizer: its update takes no extra argument.*"
                                        r"unexpected keyword argument 'value'.*grad_fn"):
        jaxmlp.fit(NET, P0, sam, X, Y, epochs=1, batch_size=8, key=0)
