"""marglik_training's prior_precision kinds and a training that diverges in its first epoch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.train import marglik_training

NET = jaxmlp.Network((3, 4, 1), ("tanh", "sigmoid"), "binary_cross_entropy")
P0 = jaxmlp.init_params(NET, jax.random.PRNGKey(0), dtype=jnp.float32)
X = jax.random.normal(jax.random.PRNGKey(1), (3, 40), jnp.float32)
Y = (X[:1] > 0).astype(jnp.float32)
KW = dict(structure="diag", hypersteps=1)


@pytest.mark.slow  # a long test (5 s): the slow suite (scripts/test.sh --slow)
def test_a_jax_array_prior_is_the_numpy_one():
    a = marglik_training(NET, P0, X, Y, epochs=2, prior_precision=jnp.array([1.0, 2.0]), **KW)
    b = marglik_training(NET, P0, X, Y, epochs=2, prior_precision=np.array([1.0, 2.0]), **KW)
    assert a.history["prior_precision"].shape == (1, 2)
    np.testing.assert_array_equal(a.history["prior_precision"], b.history["prior_precision"])
    np.testing.assert_array_equal(a.history["weight_decay"], b.history["weight_decay"])


def test_a_per_parameter_prior_is_refused_by_name():
    with pytest.raises(TypeError, match=r"^prior_precision: expected a number > 0 or 2 numbers "
                       r"> 0 \(one per layer.*per-parameter prior.*got a list of dict\.$"):
        marglik_training(NET, P0, X, Y, epochs=2, prior_precision=jax.tree.map(jnp.ones_like, P0))


def test_a_training_that_goes_uphill_in_epoch_1_is_the_diverged_error():
    """sgd(1e6): epoch 1 moves the parameters to a cost far above the initial one; the
    evidence ascent fails there, and the error blames the optimizer's rate, not the ascent's."""
    J0 = float(jaxmlp.loss(NET, P0, X, Y))
    with pytest.raises(ValueError, match=r"^marglik_training: the training diverged at epoch 1 "
                       rf"\(cost \S+ on the training split at its parameters, above the initial "
                       rf"cost {J0:.4g}.*; lower the optimizer's learning rate\.$") as error:
        marglik_training(NET, P0, X, Y, epochs=2, optimizer=optax.sgd(1e6), batch_size=8)
    J = float(str(error.value).split("(cost ")[1].split(" ")[0])
    assert J > J0
