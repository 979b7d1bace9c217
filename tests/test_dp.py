"""Private training: accounting, per-layer clipping, Poisson sampling, the DP epoch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import privacy, train
from jaxmlp.privacy import DPSGD, calibrate_noise, dp_value_and_grad, epsilon

dp_accounting = pytest.importorskip("dp_accounting")
from helpers import dense_problem  # noqa: E402

INF = float("inf")


def _problem(dtype=jnp.float64, sizes=(4, 6, 5, 3), m=9, seed=0):
    return dense_problem(("tanh", "relu", "softmax"), dtype, sizes, m, seed)


def _oracle_grads(net, params, X, Y):
    """Per-example gradients of L_i by autodiff (vmap of grad of the one-column loss)."""
    def L_i(p, x, y):
        return jaxmlp.loss(net, p, x[:, None], y[:, None])

    G = jax.vmap(jax.grad(L_i), in_axes=(None, 1, 1))(params, X, Y)
    return jax.tree.map(lambda g: np.asarray(g, np.float64), G)


def _clip_by_hand(G, C, weights=None):
    """Flat (C a float) or per-layer (C a list) clipping of stacked per-example gradients."""
    m = jax.tree.leaves(G)[0].shape[0]
    w = np.ones(m) if weights is None else np.asarray(weights, np.float64)
    out = []
    for l, layer in enumerate(G):
        out.append({k: np.zeros(v.shape[1:]) for k, v in layer.items()})
    flat = np.concatenate([g.reshape(m, -1) for g in jax.tree.leaves(G)], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    for i in range(m):
        for l, layer in enumerate(G):
            if isinstance(C, list):
                nl = math.sqrt(sum(float(np.sum(layer[k][i] ** 2)) for k in ("W", "b")))
                c = min(1.0, C[l] / nl) if nl > 0 else 1.0
            else:
                c = min(1.0, C / norms[i]) if norms[i] > 0 else 1.0
            for k in ("W", "b"):
                out[l][k] += w[i] * c * layer[k][i]
    return out


def _maxrel(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - y)) / np.max(np.abs(y)))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ----------------------------------------------------------------------------- accounting


def test_epsilon_known_case_agrees_with_dp_accounting():
    # sigma = 3, q = 0.1, 512 steps, delta = 1e-6: epsilon about 3.77 (PLD).
    e = epsilon(noise_multiplier=3.0, sampling_rate=0.1, steps=512, delta=1e-6)
    from dp_accounting import pld, rdp

    ev = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(3.0)), 512)
    ref = pld.PLDAccountant()  # the library's default (finer) grid
    ref.compose(ev)
    e_ref = ref.get_epsilon(1e-6)
    assert abs(e_ref - 3.77) < 0.01
    assert e_ref <= e <= e_ref * (1 + 1e-3)  # pessimistic coarser grid: an upper bound, close
    e_rdp = epsilon(noise_multiplier=3.0, sampling_rate=0.1, steps=512, delta=1e-6,
                    accountant="rdp")
    r = rdp.RdpAccountant(list(privacy.RDP_ORDERS))
    r.compose(ev)
    assert e_rdp == pytest.approx(r.get_epsilon(1e-6), rel=1e-12)
    assert e_rdp > e  # RDP is the looser bound


def test_epsilon_monotone_and_edge_values():
    kw = dict(sampling_rate=0.2, delta=1e-5)
    es = [epsilon(noise_multiplier=1.5, steps=s, **kw) for s in (1, 10, 100)]
    assert 0 < es[0] < es[1] < es[2]
    assert epsilon(noise_multiplier=2.0, steps=100, **kw) < es[2]
    assert epsilon(noise_multiplier=1.5, steps=0, **kw) == 0.0
    assert epsilon(noise_multiplier=0.0, steps=5, **kw) == INF


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibration_inverts_epsilon(accountant):
    kw = dict(delta=1e-5, sampling_rate=0.5, steps=80, accountant=accountant)
    for target in (1.0, 4.0):
        sigma = calibrate_noise(target_epsilon=target, **kw)
        e = epsilon(noise_multiplier=sigma, **kw)
        assert e <= target
        assert e > 0.97 * target  # the smallest such sigma, to rtol 1e-3
        assert epsilon(noise_multiplier=sigma / 1.01, **kw) > target


@pytest.mark.parametrize("kw,pattern", [
    (dict(target_epsilon=0.0), "^target_epsilon: expected a number > 0"),
    (dict(target_epsilon=-1.0), "^target_epsilon"),
    (dict(target_epsilon=float("nan")), "^target_epsilon"),
    (dict(delta=0.0), r"^delta: expected a number in \(0, 1\)"),
    (dict(delta=1.0), r"^delta: expected a number in \(0, 1\)"),
    (dict(sampling_rate=0.0), r"^sampling_rate: expected a number in \(0, 1\]"),
    (dict(sampling_rate=1.5), r"^sampling_rate: expected a number in \(0, 1\]"),
    (dict(accountant="gdp"), r"^accountant: expected one of \['pld', 'rdp'\]"),
    (dict(steps=0), "^steps: expected a positive integer"),
    (dict(target_epsilon=1e-4, sampling_rate=1.0, steps=10_000), "^target_epsilon: 0.0001 cannot be reached"),
])
def test_calibration_bad_input(kw, pattern):
    args = dict(target_epsilon=1.0, delta=1e-5, sampling_rate=0.1, steps=100)
    args.update(kw)
    with pytest.raises(ValueError, match=pattern):
        calibrate_noise(**args)


def test_epsilon_bad_input():
    with pytest.raises(ValueError, match="^noise_multiplier"):
        epsilon(noise_multiplier=-1.0, sampling_rate=0.1, steps=1, delta=1e-5)
    with pytest.raises(ValueError, match="^delta"):
        epsilon(noise_multiplier=1.0, sampling_rate=0.1, steps=1, delta=2.0)
    with pytest.raises(TypeError, match="^steps"):
        epsilon(noise_multiplier=1.0, sampling_rate=0.1, steps=1.5, delta=1e-5)


# ----------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("per_layer", [False, True], ids=["flat", "per_layer"])
def test_clipped_gradient_matches_autodiff_oracle(per_layer):
    net, params, X, Y = _problem(m=12, seed=3)
    G = _oracle_grads(net, params, X, Y)
    layer_norms = np.stack([
        np.sqrt(sum(np.sum(layer[k].reshape(12, -1) ** 2, axis=1) for k in ("W", "b")))
        for layer in G])  # (L, m)
    if per_layer:  # thresholds at each layer's median: some examples clipped, some not
        C = [float(np.median(r)) for r in layer_norms]
    else:
        C = float(np.median(np.sqrt(np.sum(layer_norms ** 2, axis=0))))
    out = dp_value_and_grad(net, params, X, Y, jax.random.key(0), l2_norm_clip=C,
                            noise_multiplier=0.0)
    want = _clip_by_hand(G, C)
    assert _maxrel(out.grads, jax.tree.map(lambda g: g / 12, want)) <= 1e-12
    np.testing.assert_allclose(np.asarray(out.layer_norms), layer_norms, rtol=1e-12)
    c = np.asarray(out.clip_factors)
    assert c.shape == ((3, 12) if per_layer else (12,))
    assert 0 < np.sum(c < 1) < c.size
    # The factor is exactly min(1, C/||g||), no epsilon in the denominator.
    if per_layer:
        with np.errstate(divide="ignore"):  # a zero layer gradient: C/0 = inf, factor 1
            np.testing.assert_array_equal(
                c, np.minimum(1.0, np.asarray(C)[:, None] / np.asarray(out.layer_norms)))
    else:
        np.testing.assert_array_equal(c, np.minimum(1.0, C / np.asarray(out.norms)))


def test_per_layer_noise_scales_with_total_threshold():
    net, params, X, Y = _problem(sizes=(20, 60, 15, 4), m=8)
    C, sigma = [0.3, 0.4, 1.2], 1.3
    kw = dict(l2_norm_clip=C)
    clean = dp_value_and_grad(net, params, X, Y, jax.random.key(0), noise_multiplier=0.0, **kw)
    noisy = dp_value_and_grad(net, params, X, Y, jax.random.key(5), noise_multiplier=sigma, **kw)
    z = np.concatenate([((a - b) * 8 / (sigma * 1.3)).ravel() for a, b in
                        zip(jax.tree.leaves(noisy.grads), jax.tree.leaves(clean.grads))])
    # sqrt(0.09 + 0.16 + 1.44) = 1.3
    assert abs(float(np.std(z)) - 1.0) < 6 / math.sqrt(2 * z.size)


def test_mask_gives_exactly_the_selected_examples():
    net, params, X, Y = _problem(m=10, seed=7)
    mask = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1], bool)
    C, D = 0.5, 7.3
    out = dp_value_and_grad(net, params, X, Y, jax.random.key(0), l2_norm_clip=C,
                            noise_multiplier=0.0, mask=mask, divisor=D)
    sel = dp_value_and_grad(net, params, X[:, mask], Y[:, mask], jax.random.key(0),
                            l2_norm_clip=C, noise_multiplier=0.0, divisor=D)
    assert _maxrel(out.grads, sel.grads) <= 1e-13
    assert float(out.loss) == pytest.approx(float(sel.loss), rel=1e-13)
    want = _clip_by_hand(_oracle_grads(net, params, X, Y), C, weights=mask)
    assert _maxrel(out.grads, jax.tree.map(lambda g: g / D, want)) <= 1e-12
    np.testing.assert_array_equal(np.asarray(out.clip_factors)[~mask], 0.0)


def test_sigma_zero_draws_no_random_numbers():
    net, params, X, Y = _problem()
    jaxpr = str(jax.make_jaxpr(lambda k: dp_value_and_grad(
        net, params, X, Y, k, l2_norm_clip=1.0, noise_multiplier=0.0).grads)(jax.random.key(0)))
    assert "random_bits" not in jaxpr and "threefry" not in jaxpr
    jaxpr = str(jax.make_jaxpr(lambda k: dp_value_and_grad(
        net, params, X, Y, k, l2_norm_clip=1.0, noise_multiplier=1.0).grads)(jax.random.key(0)))
    assert "random_bits" in jaxpr or "threefry" in jaxpr


@pytest.mark.parametrize("clip,exc,pattern", [
    ([1.0, 1.0], ValueError, r"^l2_norm_clip: expected one threshold per layer \(3"),
    ([1.0, 0.0, 1.0], ValueError, r"^l2_norm_clip\[1\]: expected a number > 0"),
    ([1.0, float("nan"), 1.0], ValueError, r"^l2_norm_clip\[1\]"),
    ([1.0, INF, 1.0], ValueError, r"^l2_norm_clip\[1\]: expected a finite"),
    (float("nan"), ValueError, "^l2_norm_clip"),
])
def test_bad_clip(clip, exc, pattern):
    net, params, X, Y = _problem()
    with pytest.raises(exc, match=pattern):
        dp_value_and_grad(net, params, X, Y, jax.random.key(0), l2_norm_clip=clip,
                          noise_multiplier=1.0)


# ----------------------------------------------------------------------------- Poisson sampling


def test_padded_batch_size_bound():
    n, q, steps = 1438, 0.5, 100
    B = privacy.padded_batch_size(n, q, steps)
    assert privacy.overflow_probability(n, q, B, steps) <= 1e-9
    assert privacy.overflow_probability(n, q, B - 1, steps) > 1e-9
    # A Chernoff-free cross-check of the binomial tail: the sum of the pmf above B.
    from math import comb, log, exp

    tail = sum(exp(log(comb(n, k)) + k * log(q) + (n - k) * log(1 - q)) for k in range(B + 1, n + 1))
    assert steps * tail == pytest.approx(privacy.overflow_probability(n, q, B, steps), rel=1e-6)
    assert q * n < B < q * n + 8 * math.sqrt(n * q * (1 - q))
    assert privacy.padded_batch_size(50, 1.0, 10) == 50


def test_poisson_batch_size_mean_and_variance():
    n, q, B = 400, 0.3, 400
    keys = jax.random.split(jax.random.key(0), 4000)
    idx, valid, count = jax.vmap(lambda k: privacy.poisson_batch(k, n, q, B))(keys)
    count = np.asarray(count, np.float64)
    T = count.size
    mean, var = q * n, q * (1 - q) * n
    assert abs(count.mean() - mean) < 5 * math.sqrt(var / T)
    # SE of the sample variance ~ var sqrt(2/T) (near-normal counts)
    assert abs(count.var(ddof=1) - var) < 5 * var * math.sqrt(2 / T)
    # each example's inclusion frequency is q; indices are the selected ones, sorted
    valid, idx = np.asarray(valid), np.asarray(idx)
    freq = np.zeros(n)
    for row_i, row_v in zip(idx[:500], valid[:500]):
        sel = row_i[row_v]
        assert np.all(np.diff(sel) > 0)
        freq[sel] += 1
    assert abs(freq.mean() / 500 - q) < 0.01
    np.testing.assert_array_equal(valid.sum(1), count.astype(int))


@pytest.mark.slow  # a long test (6 s): the DP epoch's steps also in test_epoch_loop
def test_dp_epoch_is_the_steps_it_draws():
    """The scanned epoch equals its steps replayed by hand from the same keys."""
    net, params, X, Y = _problem(dtype=jnp.float64, m=40, seed=1)
    opt = optax.sgd(0.3, momentum=0.9)
    kw = dict(sampling_rate=0.25, l2_norm_clip=[0.5, 0.5, 0.5], noise_multiplier=0.7)
    epoch = train.make_dp_train_epoch(net, opt, steps_per_epoch=3, max_batch_size=25, **kw)
    key = jax.random.key(3)
    p1, s1, mt = epoch(params, opt.init(params), key, X, Y)
    p, s = params, opt.init(params)
    for s_key in jax.random.split(key, 3):
        k_sample, k_noise = jax.random.split(s_key)
        idx, valid, count = privacy.poisson_batch(k_sample, 40, 0.25, 25)
        sel = np.asarray(idx)[np.asarray(valid)]
        g = dp_value_and_grad(net, p, X[:, idx], Y[:, idx], k_noise, l2_norm_clip=kw["l2_norm_clip"],
                              noise_multiplier=0.7, mask=valid, divisor=0.25 * 40).grads
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        assert len(sel) == int(count)
    assert _maxrel(p1, jax.tree.map(np.asarray, p)) <= 1e-12
    assert mt.cost.shape == (3,) and np.all(np.asarray(mt.overflow) == 0)


def test_dp_epoch_trains_float32():
    net, params, X, _ = _problem(dtype=jnp.float32, m=200, seed=2)
    Y = jax.nn.one_hot(jnp.argmax(X[:3], axis=0), 3, dtype=jnp.float32).T  # learnable labels
    opt = optax.sgd(0.5, momentum=0.9)
    epoch = train.make_dp_train_epoch(net, opt, sampling_rate=0.5, l2_norm_clip=1.0,
                                        noise_multiplier=0.5)
    J0 = float(jaxmlp.loss(net, params, X, Y))
    state, key = opt.init(params), jax.random.key(0)
    for _ in range(30):
        key, sub = jax.random.split(key)
        params, state, mt = epoch(params, state, sub, X, Y)
    assert float(jaxmlp.loss(net, params, X, Y)) < 0.8 * J0
    assert np.asarray(mt.batch_size).shape == (2,)


# ----------------------------------------------------------------------------- fit


def _fit_problem(m=60):
    net = jaxmlp.Network((5, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, m)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, np.argmax(X[:3], axis=0)]
    return net, jaxmlp.init_params(net, jax.random.PRNGKey(1)), jnp.asarray(X), jnp.asarray(Y)


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_fit_dp_equals_the_dp_epoch_and_reports_epsilon():
    from jaxmlp.train.loop import fit

    net, params, X, Y = _fit_problem()
    opt = optax.sgd(0.5, momentum=0.9)
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.2, sampling_rate=0.25, delta=1e-3)
    key = jax.random.PRNGKey(4)
    fr = fit(net, params, opt, X, Y, epochs=3, key=key, dp=dp, eval_sets={"train": (X, Y)})
    assert fr.status == "completed"
    B = privacy.padded_batch_size(60, 0.25, 3 * 4)
    epoch = train.make_dp_train_epoch(net, opt, sampling_rate=0.25, l2_norm_clip=1.0,
                                        noise_multiplier=1.2, max_batch_size=B)
    p, st, k = params, opt.init(params), key
    for _ in range(3):
        k, ek = jax.random.split(k)
        p, st, mt = epoch(p, st, ek, X, Y)
    for a, b in zip(jax.tree.leaves(fr.state.params), jax.tree.leaves(p)):
        np.testing.assert_array_equal(a, b)
    eps = [h["epsilon"] for h in fr.history]
    assert eps == [epsilon(noise_multiplier=1.2, sampling_rate=0.25, steps=4 * e, delta=1e-3)
                   for e in (1, 2, 3)]
    assert [h["steps"] for h in fr.history] == [4, 8, 12]


def test_fit_dp_stops_before_exceeding_the_target():
    from jaxmlp.train.loop import fit

    net, params, X, Y = _fit_problem()
    kw = dict(noise_multiplier=1.0, sampling_rate=0.5, delta=1e-3)
    e2 = epsilon(steps=4, **kw)
    e3 = epsilon(steps=6, **kw)
    target = (e2 + e3) / 2
    fr = fit(net, params, optax.sgd(0.1), X, Y, epochs=5, key=jax.random.PRNGKey(0),
             dp=DPSGD(l2_norm_clip=1.0, target_epsilon=target, **kw))
    assert fr.status == "budget" and fr.state.epoch == 2
    assert "epoch 3 would spend epsilon" in fr.message
    assert fr.history[-1]["epsilon"] == e2 <= target


@pytest.mark.parametrize("kw,exc,pattern", [
    (dict(batch_size=10), ValueError, "^batch_size: expected None with dp"),
    (dict(dp=DPSGD(1.0, 1.0, 0.5, delta=0.05)), ValueError, r"^delta: expected a value below 1/n"),
    (dict(dp=DPSGD(1.0, 1.0, 0.0, delta=1e-3)), ValueError, "^sampling_rate"),
    (dict(dp=DPSGD([1.0], 1.0, 0.5, delta=1e-3)), ValueError, "^l2_norm_clip: expected one threshold per layer"),
    (dict(dp=DPSGD(INF, 0.0, 0.5, delta=1e-3)), ValueError, "^l2_norm_clip: expected a finite"),
    (dict(dp=DPSGD(1.0, 1.0, 0.5, delta=1e-3, target_epsilon=0.0)), ValueError, "^target_epsilon"),
    (dict(dp=(1.0, 1.0)), TypeError, "^dp: expected a jaxmlp.privacy.DPSGD"),
])
def test_fit_dp_bad_input(kw, exc, pattern):
    from jaxmlp.train.loop import fit

    net, params, X, Y = _fit_problem()
    args = dict(dp=DPSGD(1.0, 1.0, 0.5, delta=1e-3))
    args.update(kw)
    with pytest.raises(exc, match=pattern):
        fit(net, params, optax.sgd(0.1), X, Y, epochs=2, key=jax.random.PRNGKey(0), **args)


def test_dp_epoch_refuses_nonfinite_data():
    net, params, X, Y = _problem(dtype=jnp.float32, m=20)
    epoch = train.make_dp_train_epoch(net, optax.sgd(0.1), sampling_rate=0.5,
                                        l2_norm_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="^X"):
        epoch(params, optax.sgd(0.1).init(params), jax.random.key(0), X.at[0, 3].set(jnp.nan), Y)


# ----------------------------------------------------------------------------- resuming


def _calibrated(steps, target=2.0):
    return calibrate_noise(target_epsilon=target, delta=1e-3, sampling_rate=0.5, steps=steps)


@pytest.mark.slow  # a long test (6 s): resume refusals also in test_dp_edges
def test_fit_dp_resume_goes_on_only_at_the_recorded_noise_multiplier():
    from jaxmlp.train.loop import fit

    net, params, X, Y = _fit_problem()
    dp = DPSGD(1.0, sampling_rate=0.5, delta=1e-3, target_epsilon=2.0)  # 2 steps per epoch
    sigma3 = _calibrated(steps=3 * 2)
    fr1 = fit(net, params, optax.sgd(0.1), X, Y, epochs=3, key=jax.random.PRNGKey(4), dp=dp,
              on_epoch_end=lambda s, row: row["epoch"] < 1)
    assert fr1.status == "stopped" and fr1.state.epoch == 1
    assert fr1.history[0]["noise_multiplier"] == fr1.privacy["noise_multiplier"] == sigma3
    resume = dict(key=None, state=fr1.state)

    # calibrated over the new call's 6 epochs: another sigma, refused with both values
    sigma6 = _calibrated(steps=6 * 2)
    assert sigma6 > sigma3
    with pytest.raises(ValueError, match=(
            rf"^dp: the history of the resumed run \(epoch 1\) records noise_multiplier "
            rf"{sigma3!r}, this call would use {sigma6!r} \(calibrated to target_epsilon 2 over "
            rf"6 epochs\).*dp=dp._replace\(noise_multiplier={sigma3!r}\).*DPSGD\(epochs=")):
        fit(net, None, optax.sgd(0.1), X, Y, epochs=6, dp=dp, history=fr1.history, **resume)
    with pytest.raises(ValueError, match=r"^dp: the noise multiplier is calibrated .* but no "
                                         r"history was given, .*history=fr.history"):
        fit(net, None, optax.sgd(0.1), X, Y, epochs=6, dp=dp, **resume)
    bare = [{k: v for k, v in row.items() if k != "noise_multiplier"} for row in fr1.history]
    with pytest.raises(ValueError, match="but the history given does not record noise_multiplier"):
        fit(net, None, optax.sgd(0.1), X, Y, epochs=6, dp=dp, history=bare, **resume)

    # the recorded sigma given: the target caps the run (epoch 4 would spend more than 2)
    capped = fit(net, None, optax.sgd(0.1), X, Y, epochs=6, dp=dp._replace(noise_multiplier=sigma3),
                 history=fr1.history, **resume)
    spent = epsilon(noise_multiplier=sigma3, sampling_rate=0.5, steps=3 * 2, delta=1e-3)
    assert capped.status == "budget" and capped.state.epoch == 3, capped.message
    assert capped.privacy["epsilon"] == capped.history[-1]["epsilon"] == spent <= 2.0
    assert [row["noise_multiplier"] for row in capped.history] == [sigma3] * 3

    # the same horizon (the first call's epochs) calibrates the same sigma, bit for bit
    same = fit(net, None, optax.sgd(0.1), X, Y, epochs=3, dp=dp, history=fr1.history, **resume)
    assert same.status == "completed" and same.privacy["epsilon"] == spent
    for a, b in zip(jax.tree.leaves(same.state.params), jax.tree.leaves(capped.state.params)):
        np.testing.assert_array_equal(a, b)


def test_fit_dp_resume_refuses_another_given_noise_multiplier():
    from jaxmlp.train.loop import fit

    net, params, X, Y = _fit_problem()
    fr1 = fit(net, params, optax.sgd(0.1), X, Y, epochs=1, key=jax.random.PRNGKey(0),
              dp=DPSGD(1.0, 1.0, 0.5, delta=1e-3))
    assert fr1.history[0]["noise_multiplier"] == 1.0
    with pytest.raises(ValueError, match=r"^dp: the history of the resumed run \(epoch 1\) records "
                                         r"noise_multiplier 1.0, this call would use 1.5 \(given "
                                         r"as dp.noise_multiplier\)"):
        fit(net, None, optax.sgd(0.1), X, Y, epochs=2, key=None, state=fr1.state,
            history=fr1.history, dp=DPSGD(1.0, 1.5, 0.5, delta=1e-3))


# ----------------------------------------------------------------------------- divergence


def test_fit_dp_empty_first_batch_is_no_explosion_baseline():
    """An empty Poisson batch costs exactly 0: the explode test's baseline is the first
    non-zero cost of a non-empty batch, not 0 (which made every later cost an explosion)."""
    from jaxmlp.train.loop import fit

    net, params, X, Y = _fit_problem(m=20)  # q = 0.05: P(empty batch) = 0.95^20 = 0.36
    dp = DPSGD(1.0, 1.0, 0.05, delta=1e-3)
    fr = fit(net, params, optax.sgd(0.1), X, Y, epochs=3, key=jax.random.PRNGKey(2), dp=dp)
    assert fr.history[0]["first_cost"] == 0.0  # this key's first batch is empty
    assert fr.status == "completed" and fr.state.epoch == 3, fr.message
    assert fr.history[0]["running_cost"] > 0  # later batches cost more than 1e6 times 0


@pytest.mark.slow  # a guard: under dp no raw cost stops the run, however far it climbs
def test_fit_dp_never_stops_on_a_raw_cost():
    """The minibatch cost exceeds explode_factor times the first non-empty batch's cost (the
    non-private explode test would fire), yet the private run is not stopped by it: a cost is
    computed from the raw data, outside the accountant; only non-finite parameters stop it."""
    from jaxmlp.train.loop import fit

    net, params, X, Y = _fit_problem(m=20)
    opt, key = optax.sgd(1e3), jax.random.PRNGKey(0)
    fr = fit(net, params, opt, X, Y, epochs=2, key=key, explode_factor=100.0,
             dp=DPSGD(1.0, 1.0, 0.1, delta=1e-3))
    epoch = train.make_dp_train_epoch(net, opt, sampling_rate=0.1, l2_norm_clip=1.0,
                                      noise_multiplier=1.0,
                                      max_batch_size=privacy.padded_batch_size(20, 0.1, 2 * 10))
    _, ek = jax.random.split(key)
    _, _, mt = epoch(params, opt.init(params), ek, X, Y)
    cost, size = np.asarray(mt.cost), np.asarray(mt.batch_size)
    b = abs(float(cost[(size > 0) & (cost != 0)][0]))
    assert b > 0 and np.any(cost > 100.0 * b)  # the non-private explode test would fire
    assert fr.status == "completed" and fr.state.epoch == 2, fr.message


def test_fit_first_cost_of_zero_is_no_explosion_baseline():
    """Without dp too: a first minibatch cost of exactly 0 gives no baseline; the first
    non-zero cost does (J = (1/2m) sum (y - 0)^2 = 1/2 on the batch of ones)."""
    from jaxmlp.train.loop import fit

    net = jaxmlp.Network((1, 1), ("linear",), "mean_squared_error")
    zeros = jax.tree.map(jnp.zeros_like, jaxmlp.init_params(net, jax.random.PRNGKey(0)))
    X = jnp.ones((1, 4), jnp.float32)
    Y = jnp.asarray([[0.0, 0.0, 1.0, 1.0]], jnp.float32)
    fr = fit(net, zeros, optax.sgd(0.0), X, Y, epochs=2, batch_size=2, key=jax.random.PRNGKey(0),
             permutation=lambda key, m: jnp.arange(m))
    assert fr.status == "completed", fr.message
    assert [row["first_cost"] for row in fr.history] == [0.0, 0.0]
    assert [row["running_cost"] for row in fr.history] == [0.25, 0.25]
