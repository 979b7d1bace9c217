"""A saved model records the fingerprint of each registered rule it uses (its values at fixed
points): loading with another definition under the same name is refused naming the rule; the
same definition written anew loads; a file without the record loads as before."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.data import export
from jaxmlp.oracle import registry

ACT, COST = "t_fp_act", "t_fp_cost"


def soft_sign(Z):  # rule A: g(z) = z / (1 + |z|), g'(z) = 1 / (1 + |z|)^2
    return Z / (1.0 + jnp.abs(Z))


def soft_sign_prime(Z):
    return 1.0 / (1.0 + jnp.abs(Z)) ** 2


def tanh2(Z):  # rule B under the same name: g(z) = tanh(2z), g'(z) = 2 (1 - tanh(2z)^2)
    return jnp.tanh(2 * Z)


def tanh2_prime(Z):
    return 2 * (1 - jnp.tanh(2 * Z) ** 2)


def half_squares(A, Y):  # L = 1/2 sum_rows (A - Y)^2, dL/dA = A - Y
    return 0.5 * jnp.sum((A - Y) ** 2, axis=0)


def half_squares_seed(A, Y):
    return A - Y


@pytest.fixture
def rules():
    """Registers rule A and the cost (their verification is test_registry.py's: check=False
    here); afterwards removes both and clears JAX's compiled functions (a Network is a static
    jit argument compared by names: a later registration of the same name must not reuse a
    trace of this one)."""
    jaxmlp.register_activation(ACT, soft_sign, soft_sign_prime, init="glorot", check=False)
    jaxmlp.register_cost(COST, half_squares, half_squares_seed, check=False)
    yield
    registry._unregister(ACT)
    registry._unregister(COST)
    jax.clear_caches()


def _saved(tmp_path):
    net = jaxmlp.Network((3, 4, 2), (ACT, "linear"), COST)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float64)
    path = str(tmp_path / "model.npz")
    export.save(path, params, net)
    X = np.linspace(-2.0, 2.0, 15).reshape(3, 5)
    return path, params, X


def _numpy_outputs(params, X, g):
    """A[2] = W2 g(W1 X + b1) + b2 (F1), (F2), computed apart from the library."""
    W1, b1, W2, b2 = (np.asarray(params[l][k]) for l in (0, 1) for k in ("W", "b"))
    return W2 @ g(W1 @ X + b1[:, None]) + b2[:, None]


def _header(path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["__jaxmlp__"]))


def test_another_definition_under_the_name_is_refused_with_the_largest_difference(tmp_path,
                                                                                     rules):
    path, _, _ = _saved(tmp_path)
    rec = _header(path)["rules"]
    assert set(rec) == {"activations", "costs"} and set(rec["activations"]) == {ACT}
    jaxmlp.register_activation(ACT, tanh2, tanh2_prime, replace=True, check=False)
    with pytest.raises(ValueError) as e:
        export.load(path)
    # the largest error |recorded - now| / max(|recorded|, |now|, 1) over g(z) and g'(z) at
    # the recorded z, rule A's values rounded to 6 significant digits as stored
    z = np.array(rec["activations"][ACT]["points"]["Z"])
    r6 = np.vectorize(lambda v: float(f"{v:.6g}"))
    pairs = {"g(z)": (r6(z / (1 + np.abs(z))), np.tanh(2 * z)),
             "g'(z)": (r6(1 / (1 + np.abs(z)) ** 2), 2 * (1 - np.tanh(2 * z) ** 2))}
    err = {q: np.abs(a - b) / np.maximum(np.maximum(abs(a), abs(b)), 1) for q, (a, b) in
           pairs.items()}
    q = max(err, key=lambda k: err[k].max())
    i = np.unravel_index(np.argmax(err[q]), z.shape)
    was, now = pairs[q][0][i], pairs[q][1][i]
    msg = str(e.value)
    assert msg.startswith(f"path: {path!r}: the activation {ACT!r} registered in this process "
                          "is not the one the model was trained with (a different definition")
    assert (f"the largest difference is in {q} at z = {z[i]:g}: {now:.6g} now, {was:.6g} at "
            f"training (difference {abs(was - now):.6g}") in msg
    assert "Register the same definition as at training" in msg
    assert f"jaxmlp.register_activation({ACT!r}, ..., replace=True)" in msg
    with pytest.raises(ValueError, match=f"the activation {ACT!r} registered in this process is "
                                         "not the one"):
        jaxmlp.load_model(path)


def test_a_changed_cost_is_refused_naming_the_cost(tmp_path, rules):
    path, _, _ = _saved(tmp_path)
    jaxmlp.register_cost(COST, lambda A, Y: jnp.sum((A - Y) ** 2, axis=0),
                         lambda A, Y: 2 * (A - Y), replace=True, check=False)
    with pytest.raises(ValueError, match=f"the cost {COST!r} registered in this process is not "
                                         "the one the model was trained with") as e:
        export.load(path)
    # L at training 1/2 sum (A - Y)^2, now sum (A - Y)^2: the largest error is L's
    pts = _header(path)["rules"]["costs"][COST]["points"]
    A, Y = np.array(pts["A"]), np.array(pts["Y"])
    L = np.sum((A - Y) ** 2, axis=0)
    j = int(np.argmax(L / 2 / np.maximum(L, 1)))
    assert f"in L at example {j} (A[:, {j}], Y[:, {j}]): {L[j]:.6g} now" in str(e.value)


def test_the_same_definition_written_anew_loads_and_predicts_identically(tmp_path, rules):
    path, params, X = _saved(tmp_path)
    before = np.asarray(jaxmlp.predict(*export.load(path)[:2], jnp.asarray(X)))
    jaxmlp.register_activation(ACT, tanh2, tanh2_prime, replace=True, check=False)
    # A defined anew (new function objects, same formulas): the same bits
    jaxmlp.register_activation(ACT, lambda Z: Z / (1.0 + jnp.abs(Z)),
                               lambda Z: 1.0 / (1.0 + jnp.abs(Z)) ** 2, replace=True,
                               check=False)
    net, params2, _ = export.load(path)
    np.testing.assert_array_equal(np.asarray(jaxmlp.predict(net, params2, jnp.asarray(X))),
                                  before)
    # A written otherwise: the same values up to rounding
    jaxmlp.register_activation(ACT, lambda Z: Z * (1 / (1 + abs(Z))),
                               lambda Z: jnp.reciprocal(jnp.square(1 + abs(Z))),
                               replace=True, check=False)
    net, params2, _ = export.load(path)
    np.testing.assert_allclose(np.asarray(jaxmlp.predict(net, params2, jnp.asarray(X))),
                               _numpy_outputs(params, X, lambda Z: Z / (1 + abs(Z))),
                               rtol=1e-12, atol=1e-14)


def test_a_file_without_fingerprints_loads_as_before(tmp_path, rules):
    """A file written before fingerprints existed (no "rules" in its header, its digest over
    that header) loads with any rule of the name, which is then used (nothing to compare)."""
    path, params, X = _saved(tmp_path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__jaxmlp__"}
    header = _header(path)
    del header["rules"], header["sha256"]
    header["sha256"] = export._digest(header, arrays)
    old = str(tmp_path / "old.npz")
    np.savez(old, **arrays, __jaxmlp__=np.array(json.dumps(header)))
    jaxmlp.register_activation(ACT, tanh2, tanh2_prime, replace=True, check=False)
    net, params2, _ = export.load(old)
    np.testing.assert_allclose(np.asarray(jaxmlp.predict(net, params2, jnp.asarray(X))),
                               _numpy_outputs(params, X, lambda Z: np.tanh(2 * Z)),
                               rtol=1e-12, atol=1e-14)


def test_built_in_rules_record_nothing_and_damaged_records_are_refused(tmp_path, rules):
    net = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    path = str(tmp_path / "builtin.npz")
    export.save(path, jaxmlp.init_params(net, jax.random.PRNGKey(0)), net)
    assert "rules" not in _header(path)
    with pytest.raises(ValueError, match="the rules' fingerprints are damaged"):
        registry.check_rule_fingerprints({"activations": {ACT: {"points": {}}}})
    with pytest.raises(ValueError, match="the rules' fingerprints are damaged"):
        registry.check_rule_fingerprints([1])


def test_replace_is_for_registered_names_only(rules):
    with pytest.raises(ValueError, match=r"name: the activation 'relu' is already registered "
                                         r"\(built in, never replaced\)"):
        jaxmlp.register_activation("relu", soft_sign, soft_sign_prime, replace=True)
    with pytest.raises(ValueError, match=f"name: the activation {ACT!r} is already registered; "
                                         "choose another name, or pass replace=True"):
        jaxmlp.register_activation(ACT, soft_sign, soft_sign_prime)
    with pytest.raises(TypeError, match="replace: expected True or False, got 1"):
        jaxmlp.register_cost(COST, half_squares, half_squares_seed, replace=1)
    # a wrong rule is refused before anything is replaced
    with pytest.raises(ValueError, match="derivative: the rule"):
        jaxmlp.register_activation(ACT, tanh2, soft_sign_prime, replace=True)
    assert jaxmlp.ACTIVATIONS[ACT].forward is soft_sign
