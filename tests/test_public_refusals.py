"""Refusals at the public edge not reached elsewhere in the default suite, each naming the
argument with what was expected and what was given: fit's combinations (an ensemble with a
sharding or DP-SGD, a resumed state of another kind, no batch size, an evaluated set that is
not a pair), a bool as a key, compute and parameter dtypes (float64 without 64-bit mode),
targets of text, activations that are not a sequence, a column cache of another network,
check_data that is not a bool, an unknown dataset; and dir(jaxmlp) listing the lazy names."""

import jax
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.data import datasets
from jaxmlp.nn import checks
from jaxmlp.nn.single_column import backward_col
from jaxmlp.privacy import DPSGD
from jaxmlp.train.private_epoch import make_dp_train_epoch

NET = jaxmlp.Network((3, 2), ("softmax",), "categorical_cross_entropy")
RNG = np.random.default_rng(11)
PARAMS = [{"W": RNG.normal(size=(2, 3)), "b": RNG.normal(size=2)}]
X = RNG.normal(size=(3, 8))
Y = np.eye(2)[:, RNG.integers(0, 2, 8)]


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(ensemble=2, batch_sharding=object()), ValueError,
     r"batch_sharding: not supported with ensemble \(the members are vmapped on one device "
     r"set\); got a sharding"),
    (dict(shared_batches=True, dp=DPSGD(1.0, 1.0, 0.5, 1e-5)), ValueError,
     "dp: not supported with ensemble; got a DPSGD"),
    (dict(state=(PARAMS, None, 0, 0)), TypeError,
     "state: expected a jaxmlp.train.step.TrainState or None, got tuple"),
    (dict(batch_size=None), TypeError,
     r"batch_size: expected a positive integer \(None only with dp\), got None"),
    (dict(eval_sets={"test": [X]}), TypeError, r"eval_sets\['test'\]: expected a pair \(X, Y\), got list"),
    (dict(eval_sets={"test": X}), TypeError, r"eval_sets\['test'\]: expected a pair \(X, Y\), got ndarray"),
])
def test_fit_refuses_combinations_before_training(kwargs, exc, message):
    kw = dict(epochs=1, batch_size=4, key=0)
    kw.update(kwargs)
    with pytest.raises(exc, match=message):
        jaxmlp.fit(NET, PARAMS, optax.sgd(0.1), X, Y, **kw)


def test_key_and_dtype_refusals():
    with pytest.raises(TypeError, match="key: expected .*, got a bool"):
        checks.prng_key(True)
    with pytest.raises(TypeError, match="seed: expected .*, got a bool"):
        checks.prng_key(np.bool_(False), "seed")
    with pytest.raises(TypeError, match=r"compute_dtype: expected None or one of \('bfloat16', "
                                        r"'float16', 'float32', 'float64'\), got \{'a': 1\}"):
        checks.compute_dtype({"a": 1})
    assert checks.compute_dtype("float64") == np.float64
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match=r"compute_dtype: float64 needs "
                                            r"jax.config.update\('jax_enable_x64', True\)"):
            checks.compute_dtype("float64")
        with pytest.raises(TypeError, match=r"dtype: float64 parameters need 64-bit mode; .* "
                                            r"\(got dtype=float64\)"):
            jaxmlp.init_params(NET, jax.random.PRNGKey(0), dtype=np.float64)
    with pytest.raises(TypeError, match="dtype: expected a floating dtype, got int32"):
        jaxmlp.init_params(NET, jax.random.PRNGKey(0), dtype=np.int32)


def test_targets_of_text_refused_booleans_accepted():
    cost = jaxmlp.Network((3, 1), ("sigmoid",), "binary_cross_entropy").cost_fn
    with pytest.raises(TypeError, match="Y: expected a real numeric array, got dtype <U1"):
        cost.check_targets(np.array([["a", "b"]]))
    cost.check_targets(np.array([[True, False, True]]))  # booleans are 0/1 targets
    with pytest.raises(ValueError, match="Y"):
        cost.check_targets(np.array([[2, 0]]))  # integers are read as numbers: 2 is outside {0, 1}


def test_network_activations_must_be_a_sequence():
    with pytest.raises(TypeError, match=r"activations: expected a sequence of 2 names, got 5"):
        jaxmlp.Network((3, 4, 2), 5, "mean_squared_error")


def test_column_cache_of_another_network_refused():
    with pytest.raises(TypeError, match=r"cache: expected the Cache returned by forward_col\(net, "
                                        r"params, x\) for this network, got tuple"):
        backward_col(NET, PARAMS, (np.ones(3),), np.array([1.0, 0.0]))


def test_dp_epoch_check_data_must_be_a_bool():
    with pytest.raises(TypeError, match="check_data: expected True or False, got 'yes'"):
        make_dp_train_epoch(NET, optax.sgd(0.1), sampling_rate=0.5, l2_norm_clip=1.0,
                            noise_multiplier=1.0, check_data="yes")


def test_unknown_dataset_and_the_package_listing():
    with pytest.raises(ValueError, match=r"name: expected one of \[.*'digits'.*\], got 'mnist'"):
        datasets.feature_names("mnist")
    names = dir(jaxmlp)
    assert names == sorted(names)
    for name in ("fit", "Network", "train", "laplace", "register_activation", "load_model"):
        assert name in names


def test_a_missing_target_is_named_by_every_quantity():
    """Y=None reaches the argument check (before: the kernels unpacked X alone, "too many
    values to unpack")."""
    from jaxmlp.quantities import curvature, first_order

    calls = [
        lambda: jaxmlp.value_and_grad(NET, PARAMS, X, None),
        lambda: first_order.per_example_grads(NET, PARAMS, X, None),
        lambda: first_order.per_example_norms(NET, PARAMS, X, None),
        lambda: curvature.ggn_diag(NET, PARAMS, X, None),
        lambda: curvature.kfac_factors(NET, PARAMS, X, None),
        lambda: curvature.hessian_diag(NET, PARAMS, X, None),
        lambda: curvature.hvp(NET, PARAMS, X, None, PARAMS),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"^Y: expected an array, got None\."):
            call()
    assert checks.check_problem(NET, PARAMS, X).shape == (3, 8)  # no Y argument: X alone
