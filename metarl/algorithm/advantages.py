"""Returns, linear feature baseline and GAE for masked, time-major episode batches.

Shapes: observations (..., T, N, obs_dim), rewards and mask (..., T, N), where ``...`` is
any number of leading batch dims (typically K tasks). mask is 1.0 on real steps and 0.0 on
padding after an early termination; padded steps never enter a fit or statistic and every
per-step output is 0 there.
"""

import torch
from torch import Tensor


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """x with padded entries set to 0; unlike x * mask this also clears NaN/inf garbage there."""
    return torch.where(mask > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go G_t = r_t + gamma * G_{t+1} per episode; 0 at padded steps.

    A step past the end contributes nothing because G is 0 on padding.
    """
    out = []
    running = torch.zeros_like(rewards[..., 0, :])
    for t in range(rewards.shape[-2] - 1, -1, -1):
        running = _masked(rewards[..., t, :] + gamma * running, mask[..., t, :])
        out.append(running)
    return torch.stack(out[::-1], dim=-2)


def baseline_features(observations: Tensor, mask: Tensor) -> Tensor:
    """Linear feature baseline inputs [o, o^2, t, t^2, t^3, 1], zero at padded steps.

    Features as in rllab's LinearFeatureBaseline used by MAML (Finn et al. 2017):
    o clipped to [-10, 10], t = step_index / 100.
    """
    obs = observations.clamp(-10.0, 10.0)
    T = obs.shape[-3]
    t = torch.arange(T, dtype=obs.dtype, device=obs.device) / 100.0
    t = t.view(T, 1, 1).expand(*obs.shape[:-1], 1)
    ones = torch.ones_like(t)
    feats = torch.cat([obs, obs**2, t, t**2, t**3, ones], dim=-1)
    return _masked(feats, mask.unsqueeze(-1))


def fit_linear_baseline(
    features: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5, max_tries: int = 5
) -> Tensor:
    """Ridge fit of returns on features over the unmasked rows, one fit per leading batch element.

    Solves (X^T X + reg I) w = X^T y in float64; elements whose solve fails or is non-finite
    retry with reg * 10 (rllab's scheme), up to max_tries. Returns weights (..., F).
    """
    *lead, T, N, F = features.shape
    m = mask.reshape(*lead, T * N, 1)
    # Zeroing padded rows drops them from both sides of the normal equations. Masked before the conversion: the
    # same values (the mask only selects), one float64 pass fewer over the largest tensor of the fit.
    X = _masked(features.reshape(*lead, T * N, F), m).to(torch.float64)
    y = _masked(returns.reshape(*lead, T * N, 1), m).to(torch.float64)
    Xt = X.transpose(-1, -2)
    A = Xt @ X
    b = Xt @ y
    eye = torch.eye(F, dtype=torch.float64, device=A.device)

    weights = torch.zeros(*lead, F, dtype=torch.float64, device=A.device)
    done = torch.zeros(lead, dtype=torch.bool, device=A.device)
    reg_now = torch.full(lead, float(reg), dtype=torch.float64, device=A.device)
    for _ in range(max_tries):
        w, info = _solve_normal_equations(A + reg_now[..., None, None] * eye, b)
        w = w.squeeze(-1)
        ok = (info == 0) & torch.isfinite(w).all(dim=-1) & ~done
        weights = torch.where(ok.unsqueeze(-1), w, weights)
        done = done | ok
        if bool(done.all()):
            break
        reg_now = torch.where(done, reg_now, reg_now * 10.0)
    # Elements that never gave a finite solve keep w = 0 (a zero baseline), so output stays finite.
    return weights.to(features.dtype)


def _solve_normal_equations(A: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(solution, info) of the batched systems A w = b, info 0 where one solved.

    LU (torch.linalg.solve_ex) on one intra-op thread. With two or more, torch 2.13 runs MKL's LU of each system
    inside its own parallel loop over the batch, and that nesting fails: on the Ant's 254 baseline features with
    "Intel oneMKL ERROR: Parameter 6 was incorrect on entry to DLASWP" and a RuntimeError, on the Humanoid's 700 by
    never returning. One thread also makes the weights the same whatever thread count the update runs with (they
    differed in the last bits at 254 features), so the baseline does not depend on the machine's load; at the
    cheetahs' and nav2d's sizes both counts give the same bits. Should LU still raise, the systems are solved by
    Cholesky, valid since ridge normal equations are symmetric positive definite (a factorisation that fails reports
    info > 0, so the caller retries with a larger ridge, as for a failed LU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.solve_ex(A, b)
    except RuntimeError:
        factor, info = torch.linalg.cholesky_ex(A)
        return torch.cholesky_solve(b, factor), info
    finally:
        torch.set_num_threads(threads)


def linear_baseline_values(features: Tensor, weights: Tensor) -> Tensor:
    """Baseline values V = features @ weights, shape (..., T, N); 0 at padding (zero features)."""
    return torch.einsum("...tnf,...f->...tn", features, weights.to(features.dtype))


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates (Schulman et al. 2016, eq. 16), 0 at padded steps.

    V_{t+1} is 0 when step t+1 is padding or t = T-1, i.e. episodes end there.
    """
    next_values = torch.cat(
        [_masked(values[..., 1:, :], mask[..., 1:, :]), torch.zeros_like(values[..., :1, :])], dim=-2
    )
    deltas = _masked(rewards + gamma * next_values - values, mask)
    out = []
    running = torch.zeros_like(deltas[..., 0, :])
    for t in range(deltas.shape[-2] - 1, -1, -1):
        running = _masked(deltas[..., t, :] + gamma * lam * running, mask[..., t, :])
        out.append(running)
    return torch.stack(out[::-1], dim=-2)


def normalize(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Standardise x over the unmasked (T, N) entries of each leading batch element; 0 at padding.

    Uses the population std, as numpy's default in rllab's center_adv.
    """
    count = (mask > 0).to(x.dtype).sum(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    mean = _masked(x, mask).sum(dim=(-2, -1), keepdim=True) / count
    var = (_masked(x - mean, mask) ** 2).sum(dim=(-2, -1), keepdim=True) / count
    return _masked((x - mean) / (var.sqrt() + eps), mask)


def fitted_advantages(
    observations: Tensor,
    rewards: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    reg: float = 1e-5,
    normalize_advantages: bool = True,
) -> Tensor:
    """Advantages from a per-task linear feature baseline and GAE, optionally standardised.

    The meta-learner's single entry point; computed without gradient.
    """
    with torch.no_grad():
        observations, rewards, mask = observations.detach(), rewards.detach(), mask.detach()
        feats = baseline_features(observations, mask)
        returns = discounted_returns(rewards, mask, gamma)
        weights = fit_linear_baseline(feats, returns, mask, reg=reg)
        values = linear_baseline_values(feats, weights).to(rewards.dtype)
        adv = gae(rewards, values, mask, gamma, lam)
        if normalize_advantages:
            adv = normalize(adv, mask)
    return adv
