"""The inner-loop estimators (reinforce, lvc, dice) against a closed form, finite differences of their own surrogates
and the brute-force Fisher; float64."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from metarl.algorithm.estimators import ESTIMATORS, step_weights
from metarl.algorithm.metalearner import (
    MetaBatch,
    adapt_steps,
    adapted_values,
    inner_loss,
    meta_gradient,
    meta_gradient_and_fvp,
    meta_objective,
)
from metarl.algorithm.policy import adapted_keys, forward, log_prob
from tests.test_metalearner import fake_batch, fake_meta, finite_difference, flat, leaf_params, tiny_policy

SECOND_ORDER = ("lvc", "dice")
REPO = Path(__file__).resolve().parents[1]


# --- a one-step Gaussian bandit whose meta-gradient is known in closed form (benchmarks/studies/estimator_bandit.py
# derives it): the mean of each estimator's meta-gradient against it ---------------------------------------------
def _bandit():
    sys.path.insert(0, str(REPO / "benchmarks" / "studies"))
    try:
        return __import__("estimator_bandit")
    finally:
        sys.path.remove(str(REPO / "benchmarks" / "studies"))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mean_meta_gradient_on_a_gaussian_bandit_matches_its_closed_form(estimator):
    bandit = _bandit()
    r = bandit.measure(estimator, tasks=4000, n=100, m=100)
    mean, sem = r["mean"], r["sem"]
    assert abs(mean - r["mean_meta_gradient"]) < 4 * sem, r
    exact, slack = r["exact_meta_gradient"], abs(r["cov_term"])
    if estimator == "reinforce":
        # it misses the exact value by what its dropped term E[grad log pi grad log pi^T A] predicts
        dropped = bandit.closed_form("lvc", r["n"])["hess"] - r["hess"]
        predicted_miss = -2 * bandit.ALPHA * -dropped * (bandit.THETA - bandit.GOAL + bandit.ALPHA * r["grad"])
        assert abs((mean - exact) - predicted_miss) < 4 * sem + slack
        assert abs(mean - exact) > 20 * sem
    else:  # unbiased, up to the O(1/n) covariance of adapting on samples (below 2% here)
        assert r["hess"] == pytest.approx(r["exact_hess"], rel=1e-9)
        assert abs(mean - exact) < 4 * sem + slack
        assert slack < 0.02 * abs(exact)


# --- the estimators' definitions -------------------------------------------------------------------------------
def test_every_estimator_gives_the_same_loss_gradient_and_adapted_parameters():
    policy, batch = tiny_policy(), fake_batch(0)
    keys = adapted_keys(policy, "maml")
    grads, adapted = {}, {}
    for name in ESTIMATORS:
        params = leaf_params(policy)
        grads[name] = flat(torch.autograd.grad(inner_loss(policy, params, batch, name).sum(), list(params.values())))
        adapted[name] = adapted_values(policy, leaf_params(policy), [batch], keys, [0.3], name)
    for name in SECOND_ORDER:
        torch.testing.assert_close(grads[name], grads["reinforce"], rtol=1e-10, atol=1e-12)
        for k in adapted[name]:
            torch.testing.assert_close(adapted[name][k], adapted["reinforce"][k], rtol=1e-10, atol=1e-12)


def test_dice_weights_are_the_increments_of_the_magic_box_of_cumulative_log_probabilities():
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 5, 3, dtype=torch.float64)
    mask[1, 3:, 0] = 0
    w = step_weights("dice", logp, mask)
    torch.testing.assert_close(w.detach(), torch.zeros_like(w))  # box = 1 at every step: increments 0
    # sum_t A_t w_t has gradient A_s in logp_s and Hessian H[s, u] = A_max(s, u) (box(c_t) has second derivative
    # 1 in every pair s, u <= t; the increments leave t = max(s, u)); padded steps take no part.
    adv = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) * mask
    (grad,) = torch.autograd.grad((w * adv).sum(), logp, create_graph=True)
    torch.testing.assert_close(grad, adv * mask)
    v = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    (hv,) = torch.autograd.grad((grad * v).sum(), logp)
    vm, am = v * mask, adv * mask
    expected = torch.zeros_like(hv)
    for s in range(5):
        for u in range(5):
            expected[:, s] += am[:, max(s, u)] * vm[:, u]
    torch.testing.assert_close(hv, expected * mask)


def _fixed_reference(policy, meta: MetaBatch, keys, lrs, estimator) -> MetaBatch:
    """The same meta-batch with every inner batch's stop-gradient point pinned at today's parameters: the estimator's
    own surrogate as a function of theta (what its meta-gradient is the derivative of)."""
    params = {k: v.detach().requires_grad_(True) for k, v in dict(policy.named_parameters()).items()}
    pinned = []
    for batch, lr in zip(meta.inner, lrs):
        with torch.no_grad():
            mean, log_std = forward(policy, params, batch.episodes.observations)
        pinned.append(dataclasses.replace(batch, behaviour_log_prob=log_prob(mean, log_std, batch.episodes.actions)))
        params = {k: v.detach().requires_grad_(True)
                  for k, v in adapted_values(policy, params, [batch], keys, [lr], estimator).items()}
    return dataclasses.replace(meta, inner=pinned)


@pytest.mark.parametrize("algo", ["maml", "anil"])
@pytest.mark.parametrize("estimator", SECOND_ORDER)
def test_meta_gradient_of_each_estimator_matches_finite_differences_of_its_own_surrogate(estimator, algo):
    policy = tiny_policy()
    keys = adapted_keys(policy, algo)
    lrs = [0.3, 0.2]  # two inner steps: the second step's stop-gradient point moves with the first
    meta = fake_meta(policy, keys, lrs, old_offset=0.05)
    _, g, _ = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=False,
                                    estimator=estimator)
    own = _fixed_reference(policy, meta, keys, lrs, estimator)
    fd = finite_difference(lambda p: float(meta_objective(policy, {k: v.requires_grad_(True) for k, v in p.items()},
                                                          own, keys, lrs, False, create_graph=False,
                                                          estimator=estimator)[0].detach()), leaf_params(policy))
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-8)
    _, g_reinforce, _ = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=False)
    assert (g - g_reinforce).abs().max() > 1e-4  # the extra curvature term is there
    torch.testing.assert_close(meta_gradient(policy, leaf_params(policy), meta, keys, lrs, False, 2, estimator), g)


@pytest.mark.parametrize("estimator", SECOND_ORDER)
def test_fisher_vector_product_of_each_estimator_equals_the_brute_force_kl_hessian(estimator):
    policy = tiny_policy()
    keys = adapted_keys(policy, "maml")
    lrs = [0.3]
    meta = fake_meta(policy, keys, lrs)  # old policy = adapted one: F = J^T H J exactly
    _, _, fvp = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=False,
                                      task_chunk=2, estimator=estimator)
    params = leaf_params(policy)
    _, kl = meta_objective(policy, params, meta, keys, lrs, first_order=False, estimator=estimator)
    kl_grad = flat(torch.autograd.grad(kl, list(params.values()), create_graph=True))
    v = torch.randn(kl_grad.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    direct = flat(torch.autograd.grad(kl_grad @ v, list(params.values())))
    torch.testing.assert_close(fvp(v), direct, rtol=1e-7, atol=1e-10)
    _, _, fvp_reinforce = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=False)
    assert (fvp(v) - fvp_reinforce(v)).abs().max() > 1e-6  # J carries the estimator's terms


def test_unknown_estimator_is_a_clear_error():
    with pytest.raises(ValueError, match="'pathwise' is not one of reinforce, lvc, dice"):
        step_weights("pathwise", torch.zeros(1, 1, 1), torch.ones(1, 1, 1))


def test_multi_step_episodes_tell_lvc_from_dice():
    """lvc drops the cross-time terms that dice keeps: same first derivative, different second (MAML, T = 4)."""
    policy = tiny_policy()
    keys = adapted_keys(policy, "maml")
    meta = fake_meta(policy, keys, [0.3])
    g = {e: meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, [0.3], first_order=False,
                                  estimator=e)[1] for e in SECOND_ORDER}
    assert (g["lvc"] - g["dice"]).abs().max() > 1e-5
    adapted = {e: adapt_steps(policy, leaf_params(policy), meta.inner, keys, [0.3], False, e) for e in SECOND_ORDER}
    for k in adapted["lvc"]:
        torch.testing.assert_close(adapted["lvc"][k], adapted["dice"][k])
