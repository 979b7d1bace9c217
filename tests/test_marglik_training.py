"""jaxmlp.train.marglik_training: the prior precision learned during training.

Oracles: one training step against ``jax.grad`` of a plain jnp network's penalised mean
cost (J + (delta / 2n) ||theta||^2 on W and b); the prior's moves against the evidence's
optimum found by a long ascent (optimize_prior_precision) at the trained parameters; the
returned posterior's prior against the weight decay the last epochs used; the epoch traced
once while the prior changes (the decay a value of the optimizer state).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import laplace as lp
from jaxmlp import train


def problem(m=40, seed=0, kind="softmax"):
    rng = np.random.default_rng(seed)
    if kind == "softmax":
        net = jaxmlp.Network((3, 5, 3), ("tanh", "softmax"), "categorical_cross_entropy")
        X = rng.normal(size=(3, m))
        Y = np.eye(3)[:, (X[0] + 0.5 * X[1] > 0).astype(int) + (X[2] > 1).astype(int)]
    else:
        net = jaxmlp.Network((3, 5, 1), ("tanh", "linear"), "mean_squared_error")
        X = rng.normal(size=(3, m))
        Y = np.sin(X[:1]) + 0.1 * rng.normal(size=(1, m))
    params = [{"W": jnp.asarray(rng.normal(size=s["W"]) / np.sqrt(s["W"][1])),
               "b": jnp.asarray(0.1 * rng.normal(size=s["b"]))} for s in net.param_shapes()]
    return net, params, jnp.asarray(X), jnp.asarray(Y)


def penalised_cost(params, X, Y, wd):
    """The oracle's objective, written without the library: tanh, softmax, cross-entropy,
    plus (wd[l] / 2) ||[W[l] b[l]]||^2 per layer."""
    A = jnp.tanh(params[0]["W"] @ X + params[0]["b"][:, None])
    Z = params[1]["W"] @ A + params[1]["b"][:, None]
    J = -jnp.mean(jnp.sum(Y * jax.nn.log_softmax(Z, axis=0), axis=0))
    return J + 0.5 * sum(w * (jnp.sum(p["W"] ** 2) + jnp.sum(p["b"] ** 2))
                         for w, p in zip(wd, params))


@pytest.mark.parametrize("delta, batch_size", [(3.0, 40), ([3.0, 0.5], 16)],
                         ids=["scalar_full_batch", "per_layer_minibatches"])
def test_one_epoch_is_sgd_on_the_negative_log_joint(delta, batch_size):
    """One epoch with SGD: per minibatch theta - eta (grad J + (delta / n) theta), on the
    minibatches of jaxmlp.train.epoch_batches with the epoch key split as fit splits it
    (40 columns in batches of 16: two updates, the last 8 columns of the shuffle sit out);
    the prior untouched (no update after the last epoch), the posterior's prior delta, the
    loss the mean of the minibatch costs before their updates."""
    net, params, X, Y = problem()
    eta, n = 0.5, X.shape[1]
    r = train.marglik_training(net, params, X, Y, epochs=1, batch_size=batch_size,
                               optimizer=optax.sgd(eta), prior_precision=delta)
    d = np.broadcast_to(np.asarray(delta), (2,))
    _, epoch_key = jax.random.split(jax.random.PRNGKey(0))
    idx = np.asarray(train.epoch_batches(epoch_key, n, batch_size))
    assert idx.shape == (n // batch_size, batch_size)
    cost_and_grad = jax.jit(lambda p, Xb, Yb: (penalised_cost(p, Xb, Yb, [0.0, 0.0]),
                                               jax.grad(penalised_cost)(p, Xb, Yb, d / n)))
    p, costs = params, []
    for cols in idx:
        J, g = cost_and_grad(p, X[:, cols], Y[:, cols])
        costs.append(J)
        p = jax.tree.map(lambda a, b: a - eta * b, p, g)
    for pl, ql in zip(p, r.params):
        for k in ("W", "b"):
            np.testing.assert_allclose(ql[k], pl[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(r.posterior.prior_precision, delta)
    assert r.posterior.prior_kind == ("scalar" if np.ndim(delta) == 0 else "layer")
    np.testing.assert_array_equal(r.history["weight_decay"], [np.asarray(delta) / n])
    assert r.history["epoch"].size == 0
    np.testing.assert_allclose(r.history["loss"], [np.mean(costs)], rtol=1e-12)


class CountingOptimizer:
    """optax.adam whose update counts its Python calls: one per trace of the epoch."""

    def __init__(self, learning_rate):
        self.inner, self.traces = optax.adam(learning_rate), 0

    def init(self, params):
        return self.inner.init(params)

    def update(self, grads, state, params=None):
        self.traces += 1
        return self.inner.update(grads, state, params)


@pytest.fixture(scope="module")
def trained():
    net, params, X, Y = problem()
    opt = CountingOptimizer(1e-2)
    r = train.marglik_training(net, params, X, Y, epochs=20, batch_size=16, optimizer=opt,
                               prior_precision=1e-3, burnin=4, frequency=4, hypersteps=20)
    return net, X, Y, r, opt


def test_a_new_prior_does_not_trace_the_epoch_again(trained):
    """Five weight decays over 20 epochs, one trace of the epoch: lambda is a value of the
    optimizer state (PriorDecayState), not a constant of the compiled program; a later call
    with the same optimizer reuses the program."""
    net, X, Y, r, opt = trained
    assert len(np.unique(r.history["weight_decay"])) == 5
    assert opt.traces == 1
    _, params, _, _ = problem()
    again = train.marglik_training(net, params, X, Y, epochs=1, batch_size=16, optimizer=opt,
                                   prior_precision=0.5)
    assert again.history["weight_decay"].tolist() == [0.5 / X.shape[1]] and opt.traces == 1


def test_prior_decay_refuses_an_update_without_params():
    tx = train.prior_decay()
    params = [{"W": jnp.ones((2, 3)), "b": jnp.ones(2)}]
    state = tx.init(params)
    assert state.weight_decay.shape == (1,) and float(state.weight_decay[0]) == 0.0
    with pytest.raises(ValueError, match="params"):
        tx.update(params, state)


def test_prior_moves_toward_the_evidence_optimum(trained):
    net, X, Y, r, _ = trained
    h = r.history
    assert h["epoch"].tolist() == [4, 8, 12, 16]
    # the evidence's optimum at the trained parameters: a long ascent from the last prior
    opt = lp.optimize_prior_precision(r.posterior, "marglik", steps=2000)
    target = np.log(float(opt.prior_precision))
    logs = np.log(np.concatenate([[1e-3], h["prior_precision"]]))
    assert abs(logs[-1] - target) < 0.25 * abs(logs[0] - target)
    # each update raised the evidence at its parameters: the last posterior's evidence
    # at the updated prior above the one at the prior it started from
    before = float(r.posterior.log_marginal_likelihood(prior_precision=1e-3))
    assert float(r.posterior.log_marginal_likelihood()) > before
    assert float(opt.log_marginal_likelihood()) >= float(r.posterior.log_marginal_likelihood())


def test_posterior_prior_is_the_last_weight_decay_times_n(trained):
    net, X, Y, r, _ = trained
    n = X.shape[1]
    h = r.history
    np.testing.assert_allclose(float(r.posterior.prior_precision), h["weight_decay"][-1] * n,
                               rtol=1e-13)
    np.testing.assert_allclose(h["prior_precision"][-1], h["weight_decay"][-1] * n, rtol=1e-13)
    assert h["weight_decay"][:4].tolist() == [1e-3 / n] * 4  # burn-in: the initial prior
    # the posterior is the Laplace fit at the returned params, nothing else
    la = lp.laplace(net, r.params, X, Y, structure="kron",
                    prior_precision=h["prior_precision"][-1])
    np.testing.assert_allclose(float(la.log_marginal_likelihood()),
                               float(r.posterior.log_marginal_likelihood()), rtol=1e-12)


@pytest.mark.slow
def test_per_layer_prior_follows_the_evidence():
    """One prior per layer: the posterior's L precisions are the last epochs' decays x n and
    each update's per-layer ascent from them."""
    net, params, X, Y = problem()
    r = train.marglik_training(net, params, X, Y, epochs=9, batch_size=16,
                            optimizer=optax.adam(1e-2), prior_precision=[1e-2, 1e2],
                            frequency=4, hypersteps=30)
    h = r.history
    assert h["prior_precision"].shape == (2, 2) and h["weight_decay"].shape == (9, 2)
    np.testing.assert_allclose(r.posterior.prior_precision, h["weight_decay"][-1] * X.shape[1],
                               rtol=1e-13)
    assert h["prior_precision"][0, 0] > 1e-2 and h["prior_precision"][0, 1] < 1e2


@pytest.mark.slow
def test_regression_weight_decay_carries_the_noise_variance():
    """Mean squared error: lambda = delta sigma^2 / n, sigma fitted with delta."""
    net, params, X, Y = problem(kind="mse")
    r = train.marglik_training(net, params, X, Y, epochs=6, batch_size=20,
                            optimizer=optax.adam(1e-2), frequency=2, sigma_noise=0.5)
    la = r.posterior
    assert float(la.sigma_noise) != 0.5
    np.testing.assert_allclose(float(la.prior_precision) * float(la.sigma_noise) ** 2
                               / X.shape[1], r.history["weight_decay"][-1], rtol=1e-13)


@pytest.mark.parametrize("kw, exc, match", [
    ({"epochs": 0}, ValueError, "epochs"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"optimizer": "adam"}, TypeError, "optimizer"),
    ({"structure": "kfac"}, ValueError, "structure"),
    ({"structure": "last_layer"}, ValueError, "structure"),
    ({"prior_precision": 0.0}, ValueError, "prior_precision"),
    ({"prior_precision": [1.0, 2.0, 3.0]}, ValueError, r"prior_precision: expected a number or 2"),
    ({"prior_precision": [1.0, -2.0]}, ValueError, r"prior_precision\[1\]"),
    ({"burnin": -1}, ValueError, "burnin"),
    ({"frequency": 0}, ValueError, "frequency"),
    ({"hypersteps": 0}, ValueError, "hypersteps"),
    ({"hyper_learning_rate": -0.1}, ValueError, "hyper_learning_rate"),
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"sigma_noise": 2.0}, ValueError, "sigma_noise"),
])
def test_refusals(kw, exc, match):
    net, params, X, Y = problem(m=8)
    with pytest.raises(exc, match=match):
        train.marglik_training(net, params, X, Y, **kw)


_EXPLODING = optax.sgd(1e8)  # one object: one compiled epoch for both tests


@pytest.mark.parametrize("epochs", [1, 3])
def test_an_exploding_optimizer_is_the_training_diverged_error_before_any_laplace_fit(epochs):
    """optax.sgd(1e8): the one update of epoch 1 (m = 8, one minibatch) blows the parameters
    up while staying finite; the cost at them, written here in NumPy (tanh, softmax,
    cross-entropy of the first update's parameters), passes 1e6 times the first epoch's."""
    net, params, X, Y = problem(m=8)
    J1 = float(jaxmlp.loss(net, params, X, Y))
    grads = jax.jit(jax.grad(lambda p: penalised_cost(p, X, Y, [1.0 / 8] * 2)))(params)
    moved = [{k: np.asarray(p[k]) - 1e8 * np.asarray(g[k]) for k in p}
             for p, g in zip(params, grads)]
    A = np.tanh(moved[0]["W"] @ X + moved[0]["b"][:, None])
    Z = moved[1]["W"] @ A + moved[1]["b"][:, None]
    Z = Z - Z.max(axis=0)
    J = float(-np.mean(np.sum(np.asarray(Y) * (Z - np.log(np.exp(Z).sum(axis=0))), axis=0)))
    assert J > 1e6 * J1
    with pytest.raises(ValueError) as error:
        train.marglik_training(net, params, X, Y, epochs=epochs, optimizer=_EXPLODING)
    assert str(error.value) == (
        f"marglik_training: the training diverged at epoch 1 (cost {J:.4g} on the training "
        f"split at its parameters, more than 1e+06 times the first epoch's mean cost "
        f"{J1:.4g} (explode_factor)); lower the optimizer's learning rate.")


def test_refuses_data_of_another_network():
    net, params, X, Y = problem(m=8)
    with pytest.raises(ValueError, match="X"):
        train.marglik_training(net, params, X[:2], Y)
    with pytest.raises(ValueError, match="finite|nan|NaN"):
        train.marglik_training(net, params, X.at[0, 0].set(jnp.nan), Y)


@pytest.mark.filterwarnings("ignore::UserWarning")  # BackPACK's hook notices
def test_against_laplace_torch_marglik_training():
    """laplace-torch's marglik_training on the same network, data and initial params (full
    batch, SGD, "full", scalar prior): the parameters after one epoch, and the first update's
    prior and evidence. laplace-torch keeps the prior of its last hyperstep's evaluation
    (before that step's update), so its 10 steps are our 9. Skipped without laplace-torch
    (run with .venv-compare/bin/python)."""
    pytest.importorskip("torch")
    laplace = pytest.importorskip("laplace")
    if not hasattr(laplace, "FullLLLaplace"):
        pytest.skip(f"`import laplace` is {laplace.__file__}, not laplace-torch")
    import laplace_torch_compare as ltc

    torch = ltc.torch
    case = ltc.make_case("softmax", n=24, sizes=(3, 4, 3))
    net, X, Y, n = case["net"], jnp.asarray(case["X"]), jnp.asarray(case["Y"]), 24
    params = [{k: jnp.asarray(v) for k, v in p.items()} for p in case["params"]]
    x, y = ltc.torch_data(case)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=n, shuffle=False)
    la_t, model_t, margliks, _ = laplace.marglik_training(
        ltc.torch_model(case), loader, hessian_structure="full",
        backend=ltc.BACKENDS["curvlinops"], optimizer_cls=torch.optim.SGD,
        optimizer_kwargs={"lr": 0.3}, n_epochs=1, prior_structure="scalar", n_hypersteps=10,
        prior_prec_init=2.0)
    kw = dict(batch_size=n, optimizer=optax.sgd(0.3), structure="full", prior_precision=2.0)
    one = train.marglik_training(net, params, X, Y, epochs=1, **kw)
    lin = [m for m in model_t if isinstance(m, torch.nn.Linear)]
    for p, m in zip(one.params, lin):
        np.testing.assert_allclose(p["W"], m.weight.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(p["b"], m.bias.detach().numpy(), rtol=1e-10)
    two = train.marglik_training(net, params, X, Y, epochs=2, hypersteps=9, **kw)
    np.testing.assert_allclose(two.history["prior_precision"][0],
                               float(la_t.prior_precision), rtol=1e-8)
    np.testing.assert_allclose(two.history["log_marginal_likelihood"][0], -margliks[-1],
                               rtol=1e-8)
