import subprocess
import sys

import numpy as np
import pytest
import torch

from metarl.algorithm.advantages import (
    baseline_features,
    discounted_returns,
    fit_linear_baseline,
    fitted_advantages,
    gae,
    linear_baseline_values,
    normalize,
)


def _batch(K=3, T=7, N=4, obs_dim=3, seed=0, dtype=torch.float64):
    """Random task batch with some episodes terminating early (padding after)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(K, T, N, obs_dim, generator=g, dtype=dtype)
    rew = torch.randn(K, T, N, generator=g, dtype=dtype)
    lengths = torch.randint(2, T + 1, (K, N), generator=g)
    lengths[0, 0] = T  # at least one full-length episode
    mask = (torch.arange(T).view(1, T, 1) < lengths.unsqueeze(1)).to(dtype)
    return obs * mask.unsqueeze(-1), rew * mask, mask


def _numpy_ridge(feats, returns, mask, reg):
    """Reference ridge solve on only the unpadded rows of one task."""
    keep = mask.reshape(-1).numpy() > 0
    X = feats.reshape(-1, feats.shape[-1]).numpy()[keep]
    y = returns.reshape(-1).numpy()[keep]
    return np.linalg.solve(X.T @ X + reg * np.eye(X.shape[1]), X.T @ y)


def test_discounted_returns_hand_example_with_early_termination():
    # T=3, N=2; episode 1 terminates after 2 steps (step 2 is padding with a garbage reward).
    rewards = torch.tensor([[1.0, 1.0], [2.0, 3.0], [4.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    g = 0.5
    expected = torch.tensor([[1 + g * 2 + g * g * 4, 1 + g * 3], [2 + g * 4, 3.0], [4.0, 0.0]])
    torch.testing.assert_close(discounted_returns(rewards, mask, g), expected)


def test_discounted_returns_leading_dims_match_per_task():
    _, rew, mask = _batch()
    batched = discounted_returns(rew, mask, 0.9)
    for k in range(rew.shape[0]):
        torch.testing.assert_close(batched[k], discounted_returns(rew[k], mask[k], 0.9))
    assert torch.all(batched[mask == 0] == 0)


def test_baseline_features_exact_columns_with_clipping_and_time():
    # T=3, N=1, obs_dim=2; last step is padding.
    obs = torch.tensor([[[1.0, -2.0]], [[15.0, 0.5]], [[3.0, 3.0]]])
    mask = torch.tensor([[1.0], [1.0], [0.0]])
    f = baseline_features(obs, mask)
    assert f.shape == (3, 1, 2 * 2 + 4)
    expected0 = [1.0, -2.0, 1.0, 4.0, 0.0, 0.0, 0.0, 1.0]
    t = 0.01
    expected1 = [10.0, 0.5, 100.0, 0.25, t, t**2, t**3, 1.0]  # 15 clipped to 10
    torch.testing.assert_close(f[0, 0], torch.tensor(expected0))
    torch.testing.assert_close(f[1, 0], torch.tensor(expected1))
    assert torch.all(f[2] == 0)
    assert baseline_features(-obs, mask)[1, 0, 0] == -10.0


def test_fit_matches_direct_ridge_solve_on_unpadded_rows():
    obs, rew, mask = _batch()
    feats = baseline_features(obs, mask)
    ret = discounted_returns(rew, mask, 0.99)
    w = fit_linear_baseline(feats, ret, mask, reg=1e-3)
    for k in range(obs.shape[0]):
        ref = _numpy_ridge(feats[k], ret[k], mask[k], 1e-3)
        np.testing.assert_allclose(w[k].numpy(), ref, rtol=1e-8, atol=1e-8)


def test_batched_fit_equals_separate_fits_and_unbatched_call():
    obs, rew, mask = _batch(K=4, seed=1)
    feats = baseline_features(obs, mask)
    ret = discounted_returns(rew, mask, 0.9)
    w = fit_linear_baseline(feats, ret, mask)
    assert w.shape == (4, feats.shape[-1])
    for k in range(4):
        torch.testing.assert_close(w[k], fit_linear_baseline(feats[k], ret[k], mask[k]))
    # Two leading dims behave like flattening them.
    w2 = fit_linear_baseline(feats.view(2, 2, *feats.shape[1:]), ret.view(2, 2, *ret.shape[1:]),
                             mask.view(2, 2, *mask.shape[1:]))
    torch.testing.assert_close(w2.reshape(4, -1), w)


def test_padding_rows_with_garbage_do_not_change_fit():
    obs, rew, mask = _batch(seed=2)
    feats = baseline_features(obs, mask)
    ret = discounted_returns(rew, mask, 0.99)
    w = fit_linear_baseline(feats, ret, mask)

    K, T, N, D = obs.shape
    garbage_obs = 50 * torch.randn(K, 5, N, D, dtype=obs.dtype)
    obs_p = torch.cat([obs, garbage_obs], dim=1)
    rew_p = torch.cat([rew, 50 * torch.randn(K, 5, N, dtype=rew.dtype)], dim=1)
    mask_p = torch.cat([mask, torch.zeros(K, 5, N, dtype=mask.dtype)], dim=1)
    feats_p = baseline_features(obs_p, mask_p)
    # Garbage features/returns at padded rows must be excluded by the mask inside the fit too.
    feats_p[:, T:] = torch.randn_like(feats_p[:, T:])
    ret_p = discounted_returns(rew_p, mask_p, 0.99)
    ret_p[:, T:] = 123.0
    w_p = fit_linear_baseline(feats_p, ret_p, mask_p)
    torch.testing.assert_close(w_p, w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_batches_give_finite_weights_and_advantages(dtype):
    K, T, N, D = 3, 6, 2, 3
    obs = torch.zeros(K, T, N, D, dtype=dtype)
    rew = torch.ones(K, T, N, dtype=dtype)
    mask = torch.ones(K, T, N, dtype=dtype)
    mask[1] = 0.0  # task 1 is entirely padding
    mask[2, 1:] = 0.0  # task 2: single-step episodes
    rew = rew * mask
    feats = baseline_features(obs, mask)
    w = fit_linear_baseline(feats, discounted_returns(rew, mask, 0.99), mask)
    assert w.dtype == dtype
    assert torch.isfinite(w).all()
    adv = fitted_advantages(obs, rew, mask, 0.99, 0.97)
    assert torch.isfinite(adv).all()
    assert torch.all(adv[mask == 0] == 0)


def test_fit_retries_with_larger_reg_when_solve_fails():
    # Two identical feature columns: with reg=1e-20, 14 + reg == 14 in float64, so the normal
    # equations are exactly singular; only retries with reg * 10 (up to ~1e-15) can solve them.
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    feats = torch.stack([x, x], dim=-1).view(3, 1, 2)
    ret = (2 * x).view(3, 1)
    mask = torch.ones(3, 1, dtype=torch.float64)
    w_once = fit_linear_baseline(feats, ret, mask, reg=1e-20, max_tries=1)
    assert torch.all(w_once == 0)  # failed single try falls back to a zero (finite) baseline
    w = fit_linear_baseline(feats, ret, mask, reg=1e-20, max_tries=10)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(linear_baseline_values(feats, w), ret)


def test_fit_solves_by_cholesky_where_the_batched_lu_fails(monkeypatch):
    """torch 2.13's batched LU on MKL fails on some systems with several threads; the fit then solves by Cholesky,
    the same weights to round-off."""
    obs, rew, mask = _batch(seed=4)
    feats = baseline_features(obs, mask)
    ret = discounted_returns(rew, mask, 0.99)
    by_lu = fit_linear_baseline(feats, ret, mask)

    def failing(*args, **kwargs):
        raise RuntimeError("Pivots given to lu_solve must all be greater or equal to 1.")

    monkeypatch.setattr(torch.linalg, "solve_ex", failing)
    by_cholesky = fit_linear_baseline(feats, ret, mask)
    torch.testing.assert_close(by_cholesky, by_lu, rtol=1e-4, atol=1e-5)
    values = linear_baseline_values(feats, by_cholesky)
    torch.testing.assert_close(values, linear_baseline_values(feats, by_lu), rtol=1e-4, atol=1e-4)


def test_linear_baseline_values_zero_at_padding():
    obs, rew, mask = _batch(seed=3)
    feats = baseline_features(obs, mask)
    w = torch.randn(obs.shape[0], feats.shape[-1], dtype=obs.dtype)
    v = linear_baseline_values(feats, w)
    assert v.shape == rew.shape
    torch.testing.assert_close(v[1, 2, 3], feats[1, 2, 3] @ w[1])
    assert torch.all(v[mask == 0] == 0)


def test_gae_lambda_one_is_return_minus_value():
    _, rew, mask = _batch(seed=4)
    values = torch.randn_like(rew)  # deliberately nonzero at padding too
    adv = gae(rew, values, mask, 0.9, 1.0)
    torch.testing.assert_close(adv, (discounted_returns(rew, mask, 0.9) - values) * mask)


def test_gae_lambda_zero_is_one_step_td_error():
    _, rew, mask = _batch(seed=5)
    values = torch.randn_like(rew)
    adv = gae(rew, values, mask, 0.9, 0.0)
    next_v = torch.zeros_like(values)
    next_v[:, :-1] = values[:, 1:] * mask[:, 1:]
    torch.testing.assert_close(adv, (rew + 0.9 * next_v - values) * mask)


def test_gae_hand_example_with_padding():
    # T=3, N=2; episode 1 ends after step 0 (steps 1, 2 padding with garbage values/rewards).
    rewards = torch.tensor([[1.0, 2.0], [0.0, 9.0], [3.0, 9.0]])
    values = torch.tensor([[0.5, 1.0], [1.0, 7.0], [2.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    g, lam = 0.5, 0.5
    d2 = 3.0 - 2.0
    d1 = 0.0 + g * 2.0 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    b0 = 2.0 - 1.0  # V_{t+1} = 0: the next step is padding
    expected = torch.tensor([[a0, b0], [a1, 0.0], [a2, 0.0]])
    torch.testing.assert_close(gae(rewards, values, mask, g, lam), expected)


def test_normalize_masked_statistics_per_task():
    _, _, mask = _batch(seed=6)
    x = torch.randn(mask.shape, dtype=mask.dtype) * 5 + 3
    x[mask == 0] = 1e6  # garbage at padding must not leak into the statistics
    y = normalize(x, mask)
    assert torch.all(y[mask == 0] == 0)
    for k in range(mask.shape[0]):
        vals = y[k][mask[k] > 0]
        assert abs(vals.mean().item()) < 1e-10
        assert abs(vals.std(unbiased=False).item() - 1) < 1e-6


def test_fitted_advantages_no_grad_and_masked():
    obs, rew, mask = _batch(seed=7, dtype=torch.float32)
    obs.requires_grad_(True)
    rew.requires_grad_(True)
    adv = fitted_advantages(obs, rew, mask, 0.99, 0.95)
    assert not adv.requires_grad
    assert adv.shape == rew.shape and adv.dtype == torch.float32
    assert torch.all(adv[mask == 0] == 0)
    # Unnormalised output equals the pipeline composed by hand.
    with torch.no_grad():
        f = baseline_features(obs, mask)
        w = fit_linear_baseline(f, discounted_returns(rew, mask, 0.99), mask)
        ref = gae(rew, linear_baseline_values(f, w), mask, 0.99, 0.95)
    raw = fitted_advantages(obs, rew, mask, 0.99, 0.95, normalize_advantages=False)
    torch.testing.assert_close(raw, ref)


def test_non_finite_garbage_at_padding_is_ignored():
    obs, rew, mask = _batch(seed=8)
    adv = fitted_advantages(obs, rew, mask, 0.99, 0.95)
    pad = mask == 0
    obs_bad, rew_bad = obs.clone(), rew.clone()
    obs_bad[pad] = float("nan")
    rew_bad[pad] = float("inf")
    torch.testing.assert_close(fitted_advantages(obs_bad, rew_bad, mask, 0.99, 0.95), adv)


def test_float32_fit_is_the_float64_normal_equations_bit_for_bit_with_nan_padding():
    # The fit masks in the inputs' dtype and converts afterwards; masking only selects values, so the normal
    # equations must be exactly those of converting first (padded rows hold NaN/inf garbage here).
    obs, rew, mask = _batch(K=4, T=9, N=5, obs_dim=3, seed=3, dtype=torch.float32)
    feats = baseline_features(obs, mask)
    ret = discounted_returns(rew, mask, 0.99)
    feats[mask == 0] = float("nan")
    ret[mask == 0] = float("inf")
    K, T, N, F = feats.shape
    m = mask.reshape(K, T * N, 1) > 0
    X = torch.where(m, feats.to(torch.float64).reshape(K, T * N, F), 0.0)
    y = torch.where(m, ret.to(torch.float64).reshape(K, T * N, 1), 0.0)
    A = X.transpose(-1, -2) @ X + 1e-5 * torch.eye(F, dtype=torch.float64)
    expected = torch.linalg.solve(A, X.transpose(-1, -2) @ y).squeeze(-1).to(torch.float32)
    assert torch.equal(fit_linear_baseline(feats, ret, mask, reg=1e-5), expected)


_LARGE_FIT = """
import torch
from metarl.algorithm.advantages import fit_linear_baseline
torch.manual_seed(0)
torch.set_num_threads(2)
B, T, N, F = 20, 100, 10, 700  # the Humanoid's 700 baseline features, a meta-batch of 20 tasks
X = torch.randn(B, T, N, F, dtype=torch.float64)
y = torch.randn(B, T, N, dtype=torch.float64)
w = fit_linear_baseline(X, y, torch.ones(B, T, N, dtype=torch.float64), reg=1e-5)
flat = X.reshape(B, T * N, F)
A = flat.transpose(1, 2) @ flat + 1e-5 * torch.eye(F, dtype=torch.float64)
residual = (A @ w.unsqueeze(-1)).squeeze(-1) - (flat.transpose(1, 2) @ y.reshape(B, T * N, 1)).squeeze(-1)
print(float(residual.abs().max()), torch.get_num_threads())
"""


def test_fit_with_many_features_on_two_threads_returns_and_solves():
    """torch 2.13's batched LU nests MKL's threads inside its own and with two threads never returned on the
    Humanoid's 700 features (a training hung in its second iteration); the fit solves on one thread and hands the
    caller's thread count back. Run in a child process so that a hang fails the test instead of the suite."""
    out = subprocess.run([sys.executable, "-c", _LARGE_FIT], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    residual, threads = out.stdout.split()
    assert float(residual) < 1e-6 and threads == "2"


def test_fit_weights_do_not_depend_on_the_thread_count():
    """The Ant's 254 features gave other last bits on two threads than on one; the fit is now the same on both, so
    the baseline does not follow the machine's load (the update's thread count adapts to it)."""
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(20, 200, 10, 254, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 200, 10, generator=gen, dtype=torch.float64)
    mask = torch.ones(20, 200, 10, dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        weights = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            weights.append(fit_linear_baseline(X, y, mask))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(weights[0], weights[1])
