"""The closed-form KL curvature (metarl.algorithm.fisher) against the Hessian of the mean KL by double backward (float64)."""

import pytest
import torch

from metarl.algorithm.fisher import GaussianKLCurvature
from metarl.algorithm.metalearner import masked_task_mean
from metarl.algorithm.policy import GaussianMLP, forward, kl_divergence, log_prob

K, S, OBS, ACT = 3, 7, 4, 2
# which parameters carry a task axis: none, ANIL's adapted head, MAML's adapted everything
PER_TASK = pytest.mark.parametrize("per_task", [set(), {"head.weight", "head.bias"},
                                                {"body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                                                 "head.weight", "head.bias", "log_std"}],
                                   ids=["shared", "anil", "maml"])


def setup(per_task: set[str], seed=0):
    """A tiny policy, parameters with a task axis for the names in `per_task` (as adapted ones), observations
    (K, S, OBS) and a mask with padding."""
    gen = torch.Generator().manual_seed(seed)
    policy = GaussianMLP(OBS, ACT, hidden_sizes=(5, 6), init_log_std=-0.2, generator=gen).double()
    params = {}
    for name, p in policy.named_parameters():
        shape = (K, *p.shape) if name in per_task else p.shape
        params[name] = p.detach() + 0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)
    obs = torch.randn(K, S, OBS, generator=gen, dtype=torch.float64)
    mask = torch.ones(K, S, dtype=torch.float64)
    mask[1, 4:] = 0.0
    return policy, params, obs, mask


def kl_hessian_product(policy, params, obs, mask, u):
    """H u of the mean KL(pi_old || pi) at pi = pi_old (the old policy is these parameters' own), double backward."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    with torch.no_grad():
        old_mean, old_log_std = forward(policy, params, obs)
    mean, log_std = forward(policy, leaves, obs)
    kl = masked_task_mean(kl_divergence(old_mean, old_log_std, mean, log_std).unsqueeze(-1),
                          mask.unsqueeze(-1)).mean()
    grads = torch.autograd.grad(kl, list(leaves.values()), create_graph=True)
    dot = sum((g * u[k]).sum() for g, k in zip(grads, leaves))
    return dict(zip(leaves, torch.autograd.grad(dot, list(leaves.values()))))


@PER_TASK
def test_curvature_product_equals_the_kl_hessian_where_the_policies_agree(per_task):
    policy, params, obs, mask = setup(per_task)
    gen = torch.Generator().manual_seed(1)
    u = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
    weight = mask / mask.sum(1, keepdim=True) / K  # each sample's weight in the mean KL
    got = GaussianKLCurvature(policy, params, obs, weight)(u)
    want = kl_hessian_product(policy, params, obs, mask, u)
    for name in params:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)
    assert sum(float((got[k] * u[k]).sum()) for k in params) > 0  # H is positive definite on this u


def test_curvature_ignores_parameters_outside_the_policys_layers():
    """A learned inner rule's factors are in the parameter dict but not in the policy's outputs: no curvature."""
    policy, params, obs, mask = setup(set())
    params = {**params, "inner_rule.scale.head__bias": torch.ones(ACT, dtype=torch.float64)}
    u = {k: torch.ones_like(v) for k, v in params.items()}
    got = GaussianKLCurvature(policy, params, obs, mask / mask.sum())(u)
    assert got["inner_rule.scale.head__bias"] is None and got["head.weight"].abs().sum() > 0


@PER_TASK
def test_surrogate_and_its_gradient_from_the_curvatures_forward_equal_autograd(per_task):
    """The TRPO surrogate -E[pi / pi_old A] (the mean KL's sample weights) and its gradient, away from pi_old."""
    policy, params, obs, mask = setup(per_task)
    gen = torch.Generator().manual_seed(2)
    actions = torch.randn(K, S, ACT, generator=gen, dtype=torch.float64)
    advantages = torch.randn(K, S, generator=gen, dtype=torch.float64)
    old_log_prob = log_prob(*forward(policy, params, obs), actions) + 0.2 * torch.randn(K, S, generator=gen,
                                                                                        dtype=torch.float64)
    weight = 0.4 * mask / mask.sum(1, keepdim=True) / K  # a chunk's share of the mean
    loss, grads = GaussianKLCurvature(policy, params, obs, weight).surrogate_gradient(actions, old_log_prob,
                                                                                      advantages)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    ratio = torch.exp(log_prob(*forward(policy, leaves, obs), actions) - old_log_prob)
    want = -0.4 * masked_task_mean((ratio * advantages).unsqueeze(-1), mask.unsqueeze(-1)).mean()
    want_grads = dict(zip(leaves, torch.autograd.grad(want, list(leaves.values()))))
    torch.testing.assert_close(loss, want.detach(), rtol=1e-12, atol=1e-14)
    for name in params:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-10, atol=1e-12, msg=name)
