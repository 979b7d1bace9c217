"""What docs/reliability.md, docs/rules.md and docs/privacy.md claim, held to the letter.

* every public function taking a key goes through ``jaxmlp.nn.checks.prng_key``;
* targets outside the cost's domain are refused by every entry point that fits or verifies
  (``laplace``, ``check_curvature``), as by ``fit`` and ``check_gradients``;
* a run folder's model is the one its results.json records, however it is named;
* float data of another dtype than the params' is refused, except what ``jnp.asarray``
  itself converts (NumPy float64 while JAX's 64-bit mode is off);
* a DP sampling rate with q n < 1 is refused by ``fit`` as by train.py.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import privacy
from jaxmlp.data import export
from jaxmlp.laplace import laplace
from jaxmlp.oracle import verification
from jaxmlp.privacy import dpsgd, threefry

CAT = jaxmlp.Network((3, 4, 3), ("tanh", "softmax"), "categorical_cross_entropy")
BIN = jaxmlp.Network((3, 4, 1), ("tanh", "sigmoid"), "binary_cross_entropy")
HOW = r"key: expected a PRNG key \(jax.random.key\(seed\): .* or an integer seed, got "


def _problem(net, m=8):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(net.sizes[0], m)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, np.arange(m) % 3] if net.sizes[-1] == 3 else (
        (np.arange(m) % 2)[None, :].astype(np.float32))
    return jaxmlp.init_params(net, 0), X, Y


# ----------------------------------------------------------------------------- keys

GRADS = [{"W": jnp.zeros((2, 3), jnp.float32), "b": jnp.zeros(2, jnp.float32)}]
KEYED = {  # name -> f(key)
    "random_targets": lambda k: verification.random_targets(CAT, k, 5),
    "random_problem": lambda k: verification.random_problem(CAT, k, 5),
    "add_noise": lambda k: dpsgd.add_noise(k, GRADS, 1.0, jnp.float32),
    "poisson_batch": lambda k: dpsgd.poisson_batch(k, 10, 0.5, 10),
    "threefry.normal": lambda k: threefry.normal(k, (4,), jnp.float32),
    "finite_difference_grad": lambda k: verification.finite_difference_grad(
        lambda th: jnp.sum(th["w"] ** 2), {"w": jnp.arange(3.0)}, num_directions=2, key=k),
}


@pytest.mark.parametrize("name", list(KEYED))
def test_every_function_taking_a_key_takes_a_seed_and_names_a_bad_key(name):
    """An integer seed s is jax.random.key(s), the same numbers as jax.random.PRNGKey(s);
    a string, a float or a float array is a TypeError naming key."""
    call = KEYED[name]
    for a, b, c in zip(jax.tree.leaves(call(3)), jax.tree.leaves(call(jax.random.key(3))),
                       jax.tree.leaves(call(jax.random.PRNGKey(3)))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    with pytest.raises(TypeError, match=HOW + "str"):
        call("seed")
    with pytest.raises(TypeError, match=HOW + "float"):
        call(0.5)
    with pytest.raises(TypeError, match=HOW + r"dtype float32 and shape \(2,\)"):
        call(np.zeros(2, np.float32))


def test_keys_traced_under_jit_stay_usable():
    """A raw key and an integer seed traced by jax.jit go through the same helper."""
    raw = jax.random.PRNGKey(5)
    got = jax.jit(lambda k: dpsgd.add_noise(k, GRADS, 1.0, jnp.float32))(raw)
    want = dpsgd.add_noise(raw, GRADS, 1.0, jnp.float32)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    idx, valid, count = jax.jit(lambda s: dpsgd.poisson_batch(s, 10, 0.5, 10))(jnp.int32(5))
    idx2, valid2, count2 = dpsgd.poisson_batch(jax.random.key(5), 10, 0.5, 10)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(idx2))
    assert int(count) == int(count2) == int(np.sum(np.asarray(valid)))


def test_rule_and_curvature_checks_name_a_bad_key():
    params, X, Y = _problem(CAT)
    with pytest.raises(TypeError, match=HOW + "str"):
        verification.check_curvature(CAT, params, X, Y, key="seed")
    with pytest.raises(TypeError, match=HOW + "str"):
        verification.check_cost_rule(lambda A, Y: 0.5 * jnp.sum((A - Y) ** 2, axis=0),
                                     lambda A, Y: A - Y, key="seed")
    with pytest.raises(TypeError, match=HOW + "str"):
        verification.check_activation_rule(jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2,
                                           key="seed")


# ----------------------------------------------------------------------------- target domains

BAD_TARGETS = [
    (BIN, lambda Y: np.full_like(Y, 3.0),
     r"Y: binary_cross_entropy is defined for targets with entries in \[0, 1\] .*found 8 "
     r"entries outside \[0, 1\], first Y\[0, 0\] = 3"),
    (CAT, lambda Y: np.concatenate([np.array([[2.0], [-1.0], [0.0]], np.float32), Y[:, 1:]], 1),
     r"Y: categorical_cross_entropy is defined for targets with entries >= 0, .*found 1 "
     r"negative entry, first Y\[1, 0\] = -1"),
]


@pytest.mark.parametrize("net, bad, message", BAD_TARGETS)
def test_laplace_and_check_curvature_refuse_targets_outside_the_domain(net, bad, message):
    """As fit and check_gradients: (C1) is undefined for Y outside [0, 1], (C2) for columns
    that are not distributions."""
    params, X, Y = _problem(net)
    Yb = bad(Y)
    for call in (lambda: laplace(net, params, X, Yb, structure="diag"),
                 lambda: verification.check_curvature(net, params, X, Yb),
                 lambda: verification.check_gradients(net, params, X, Yb)):
        with pytest.raises(ValueError, match=message):
            call()


# ----------------------------------------------------------------------------- run folders


def test_load_model_checks_a_run_folders_model_named_as_a_file(tmp_path):
    """load_model("RUN/model.npz") runs the check load_model("RUN") runs; the same file
    outside a run folder loads, as the refusal advises."""
    from jaxmlp.train.checkpoint import params_digest

    params = jaxmlp.init_params(CAT, 1)
    run = tmp_path / "run"
    run.mkdir()
    export.save(run / "model.npz", params, CAT)
    (run / "results.json").write_text(json.dumps({"status": "completed",
                                                  "final_params_sha256": params_digest(params)}))
    X = np.ones((3, 2), np.float32)
    want = np.asarray(jaxmlp.predict(CAT, params, X))
    for source in (run, run / "model.npz"):
        m = jaxmlp.load_model(source)
        np.testing.assert_array_equal(np.asarray(jaxmlp.predict(m.net, m.params, X)), want)
    (run / "results.json").write_text(json.dumps({"status": "completed",
                                                  "final_params_sha256": "ab" * 32}))
    for source in (run, run / "model.npz", str(run / "model.npz")):
        with pytest.raises(ValueError, match=r"path: .*model.npz is not the model of the run "
                                             r"whose results.json is beside it .* pass an "
                                             r"exported model file that is not in a run folder"):
            jaxmlp.load_model(source)
    shutil.copy(run / "model.npz", tmp_path / "exported.npz")
    m = jaxmlp.load_model(tmp_path / "exported.npz")
    np.testing.assert_array_equal(np.asarray(jaxmlp.predict(m.net, m.params, X)), want)


# ----------------------------------------------------------------------------- data dtypes


def test_float_data_of_another_dtype_is_refused_except_what_jnp_asarray_converts():
    """docs/rules.md, Precision: NumPy float64 becomes float32 with 64-bit mode off (as
    jnp.asarray gives it) and is accepted; every other mismatch is a TypeError."""
    X = np.random.default_rng(0).normal(size=(3, 5))  # NumPy float64
    p32 = jaxmlp.init_params(CAT, 0, dtype=jnp.float32)
    with jax.enable_x64(False):
        A = jaxmlp.predict(CAT, p32, X)
        assert A.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(A),
                                      np.asarray(jaxmlp.predict(CAT, p32, X.astype(np.float32))))
        for half in (np.float16, jnp.bfloat16):
            with pytest.raises(TypeError, match=r"X: expected dtype float32 \(the dtype of "
                                                rf"params\), got {jnp.dtype(half).name}"):
                jaxmlp.predict(CAT, p32, np.asarray(X, half))
        p16 = jaxmlp.init_params(CAT, 0, dtype=jnp.bfloat16)
        with pytest.raises(TypeError, match=r"X: expected dtype bfloat16 \(the dtype of "
                                            r"params\), got float32"):
            jaxmlp.predict(CAT, p16, X)  # float64 -> float32 by jnp.asarray, then refused
    # 64-bit mode on (as in this test suite): float64 and float32 never meet silently
    with pytest.raises(TypeError, match=r"X: expected dtype float32 \(the dtype of params\), "
                                        r"got float64"):
        jaxmlp.predict(CAT, p32, X)
    p64 = jaxmlp.init_params(CAT, 0, dtype=jnp.float64)
    with pytest.raises(TypeError, match=r"X: expected dtype float64 \(the dtype of params\), "
                                        r"got float32"):
        jaxmlp.predict(CAT, p64, X.astype(np.float32))


# ----------------------------------------------------------------------------- DP sampling rate


def test_fit_refuses_a_sampling_rate_below_one_expected_example():
    """q n < 1 (q = 0.01, n = 32: 0.32 expected examples) is refused by fit as by train.py;
    q = 1/n, the smallest rate named, is accepted (also where (1/n) n rounds below 1)."""
    params, X, _ = _problem(CAT, m=32)
    Y = np.eye(3, dtype=np.float32)[:, np.arange(32) % 3]
    dp = privacy.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.01, delta=1e-5)
    with pytest.raises(ValueError, match=r"^dp.sampling_rate: expected q n >= 1 \(at least one "
                                         r"expected example per batch\), got q = 0.01 with "
                                         r"n = 32 examples: q n = 0.32 expected examples per "
                                         r"batch, 100 steps per epoch. The smallest rate that "
                                         r"works is 1/n = 0.03125\.$"):
        jaxmlp.fit(CAT, params, optax.sgd(0.1), X, Y, epochs=1, key=0, dp=dp)
    assert (1.0 / 49) * 49 < 1  # rounding: the check compares q with 1/n, not q n with 1
    for n in (32, 49):
        got = dpsgd.check_dpsgd(dp._replace(sampling_rate=1.0 / n), CAT, n)
        assert got.sampling_rate == 1.0 / n and got.steps_per_epoch == n


def test_dp_epoch_refuses_a_sampling_rate_below_one_expected_example_at_its_first_call():
    """make_dp_train_epoch does not know n when built; its first call (n static under jit)
    refuses q n < 1 as fit does, before any step."""
    params, X, _ = _problem(CAT, m=32)
    Y = np.eye(3, dtype=np.float32)[:, np.arange(32) % 3]
    opt = optax.sgd(0.1)
    epoch = jaxmlp.train.make_dp_train_epoch(CAT, opt, sampling_rate=0.01, l2_norm_clip=1.0,
                                             noise_multiplier=1.0)
    with pytest.raises(ValueError, match=r"^sampling_rate: expected q n >= 1 .* got q = 0.01 "
                                         r"with n = 32 examples: q n = 0.32 .* The smallest "
                                         r"rate that works is 1/n = 0.03125\."):
        epoch(params, opt.init(params), jax.random.key(0), X, Y)
