"""Calling again compiles nothing: fit with dp, the DP-SGD gradient at new clip and noise
values, and fit with an ensemble reuse the programs of their first call, and compute what
an independent computation gives at the new values."""

# fit(dp=...) imports the accountant and scipy.stats once per process: here, not in a test
import dp_accounting.rdp  # noqa: F401
import scipy.stats  # noqa: F401
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp.privacy import DPSGD, dp_value_and_grad, make_dp_grad_fn
from jaxmlp.quantities import per_example_grads
from jaxmlp.train import ensemble as E
from jaxmlp.train import loop as F

from helpers import dense_problem  # noqa: E402


class _Compiles:
    """The programs JAX traces and compiles inside the block, counted from jax.monitoring's
    duration events (``.../jaxpr_trace_duration``, ``.../backend_compile_duration``)."""

    def __enter__(self):
        self.traces = self.compiles = 0

        def listener(event, duration, **kwargs):
            if event.endswith("jaxpr_trace_duration"):
                self.traces += 1
            elif event.endswith("backend_compile_duration"):
                self.compiles += 1

        self._listener = listener
        jax.monitoring.register_event_duration_secs_listener(listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _maxrel(a, b):
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
               for x, y in zip(_leaves(a), _leaves(b), strict=True))


@jax.jit
def _unit_noise(key, params):
    """The unit normals of the noise drawn from ``key``: ``jax.random.normal`` of one key per
    leaf of params (``jax.random.split(key, number of leaves)``, in the leaves' order)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, a.shape, a.dtype)
                                        for k, a in zip(keys, leaves)])


def _formula(net, params, X, Y, key, C, sigma):
    """(1/m) (sum_i c_i grad L_i + sigma S z) in NumPy from the per-example gradients, z the
    unit normals of ``key``. Flat C: c_i = min(1, C / ||grad L_i||), S = C; one C_l per
    layer: layer l of grad L_i scaled by min(1, C_l / ||grad^l L_i||), S = sqrt(sum_l C_l^2)."""
    m = X.shape[1]
    G = [{k: m * np.asarray(v, np.float64) for k, v in layer.items()}
         for layer in per_example_grads(net, params, X, Y, method="vmap")]
    sq = np.array([[np.sum(g["W"][i] ** 2) + np.sum(g["b"][i] ** 2) for i in range(m)]
                   for g in G])  # (L, m)
    if isinstance(C, list):
        c, S = np.minimum(1.0, np.array(C)[:, None] / np.sqrt(sq)), np.sqrt(np.sum(np.square(C)))
    else:
        c, S = np.broadcast_to(np.minimum(1.0, C / np.sqrt(sq.sum(0))), sq.shape), C
    z = jax.tree.map(lambda a: np.asarray(a, np.float64), _unit_noise(key, params))
    return [{k: (np.tensordot(c[l], g[k], axes=1) + sigma * S * z[l][k]) / m for k in g}
            for l, g in enumerate(G)]


def test_dp_gradient_at_new_clip_and_noise_values_compiles_nothing():
    net, params, X, Y = dense_problem(("relu", "tanh", "softmax"), jnp.float64, m=9, seed=3)
    key = jax.random.key(7)
    dp_value_and_grad(net, params, X, Y, key, l2_norm_clip=0.5, noise_multiplier=1.0)
    settings = [(0.7, 1.0), (1.3, 1.0), (0.5, 0.6), (0.5, 2.0)]
    with _Compiles() as again:
        outs = [dp_value_and_grad(net, params, X, Y, key, l2_norm_clip=C, noise_multiplier=s)
                for C, s in settings]
        fn = make_dp_grad_fn(net, l2_norm_clip=0.9, noise_multiplier=0.3)(params, X, Y, key)[1]
    assert (again.traces, again.compiles) == (0, 0)
    for (C, s), out in zip(settings, outs):
        assert _maxrel(out.grads, _formula(net, params, X, Y, key, C, s)) <= 1e-12, (C, s)
    assert _maxrel(fn, _formula(net, params, X, Y, key, 0.9, 0.3)) <= 1e-12


def test_per_layer_clipping_at_new_thresholds_compiles_nothing():
    """Per-layer clipping is its own program (one threshold per layer), once."""
    net, params, X, Y = dense_problem(("relu", "tanh", "softmax"), jnp.float64, m=9, seed=3)
    key = jax.random.key(8)
    dp_value_and_grad(net, params, X, Y, key, l2_norm_clip=[0.3, 0.4, 0.5], noise_multiplier=1.0)
    settings = [([0.2, 0.6, 0.9], 1.0), ([0.3, 0.4, 0.5], 1.7)]
    with _Compiles() as again:
        outs = [dp_value_and_grad(net, params, X, Y, key, l2_norm_clip=C, noise_multiplier=s)
                for C, s in settings]
    assert (again.traces, again.compiles) == (0, 0)
    for (C, s), out in zip(settings, outs):
        assert _maxrel(out.grads, _formula(net, params, X, Y, key, C, s)) <= 1e-12, (C, s)


def _fit_problem(m, seed=5):
    return dense_problem(("tanh", "softmax"), jnp.float64, (4, 6, 3), m, seed)


def test_fit_with_dp_again_compiles_nothing_and_trains_its_own_values():
    """One step per epoch at a clip no example reaches: the parameters are
    p0 - eta (sum_i grad L_i + sigma C z) / (q n), so fits that differ in sigma or C differ by
    eta (sigma' C' - sigma C) z / (q n), z the step's unit normals."""
    net, params, X, Y = _fit_problem(16)
    eta, q, n = 0.5, 0.5, 16
    opt = optax.sgd(eta)
    dp = DPSGD(l2_norm_clip=100.0, noise_multiplier=1.1, sampling_rate=q, delta=1e-3,
               accountant="rdp", steps_per_epoch=1)
    key = jax.random.PRNGKey(5)
    first = F.fit(net, params, opt, X, Y, epochs=1, key=key, dp=dp)
    with _Compiles() as again:
        same = F.fit(net, params, opt, X, Y, epochs=1, key=key, dp=dp)
        sigma = F.fit(net, params, opt, X, Y, epochs=1, key=key,
                      dp=dp._replace(noise_multiplier=2.3))
        clip = F.fit(net, params, opt, X, Y, epochs=1, key=key, dp=dp._replace(l2_norm_clip=250.0))
    assert (again.traces, again.compiles) == (0, 0)
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(same.state.params),
                                                    _leaves(first.state.params)))
    # the step's noise key: epoch key split(key)[1], step key split(epoch key, 1)[0], then
    # split(step key)[1] (the first half draws the Poisson batch)
    step_key = jax.random.split(jax.random.split(key)[1], 1)[0]
    z = _leaves(_unit_noise(jax.random.split(step_key)[1], params))
    base = _leaves(first.state.params)
    for fr, extra in ((sigma, (2.3 - 1.1) * 100.0), (clip, 1.1 * (250.0 - 100.0))):
        diff = [a - b for a, b in zip(_leaves(fr.state.params), base)]
        assert _maxrel(diff, [-eta * extra * zi / (q * n) for zi in z]) <= 1e-9
    assert sigma.privacy["noise_multiplier"] == 2.3


def test_fit_with_an_ensemble_again_compiles_nothing_and_trains_each_member():
    net, p0, X, Y = _fit_problem(24)
    p1 = _fit_problem(24, seed=6)[1]
    K, opt = 2, optax.sgd(0.3)
    P = jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, p1)
    F.fit(net, P, opt, X, Y, epochs=1, batch_size=8, key=jax.random.PRNGKey(0), ensemble=K)
    with _Compiles() as again:
        fr = F.fit(net, P, opt, X, Y, epochs=2, batch_size=8, key=jax.random.PRNGKey(6),
                   ensemble=K)
    assert again.compiles == 0
    # member k is the single network's run from its own shuffle key, to rounding
    keys = E.member_keys(jax.random.PRNGKey(6), K)
    for k, p in enumerate((p0, p1)):
        r = F.fit(net, p, opt, X, Y, epochs=2, batch_size=8, key=keys[k])
        assert _maxrel(E.member(fr.state.params, k), r.state.params) <= 1e-12, k
