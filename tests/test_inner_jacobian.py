"""The closed-form inner-step Jacobian products (metarl.algorithm.inner_jacobian) against autograd's, and the meta-gradient and
Fisher built on them against the autograd path (float64, tiny policy)."""

import dataclasses

import pytest
import torch
from test_metalearner import K, fake_batch, fake_meta, leaf_params, tiny_policy

from metarl.algorithm.inner_jacobian import InnerChain, supported
from metarl.algorithm.inner_optimizers import attach
from metarl.algorithm.metalearner import adapt_steps, adapted_values, meta_gradient_and_fvp, subsample_episodes
from metarl.algorithm.policy import adapted_keys, forward, log_prob


def with_behaviour(policy, batch, seed):
    """The batch as ProMP's inner step sees it: sampled by a policy other than the current one (rho != 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mean, log_std = forward(policy, leaf_params(policy), batch.episodes.observations)
        mean = mean + 0.2 * torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
        behaviour = log_prob(mean, log_std, batch.episodes.actions)
    return dataclasses.replace(batch, behaviour_log_prob=behaviour)


def with_rule(policy, keys, rule: str | None, seed: int = 7):
    """`policy` with the learned inner rule `rule` ('meta-sgd', 'kfo', 'kfo-psd'; None: SGD) for `keys`, its factors
    moved off the identity so that every term of the rule's derivative shows."""
    if rule is not None:
        attach(policy, keys, rule.removesuffix("-psd"), rule.endswith("-psd"))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if name.startswith("inner_rule."):
                    p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return policy


def autograd_products(policy, batches, keys, lrs, estimator, v, u):
    """J v and J^T u of theta -> theta' by autograd (double backward through the inner step)."""
    names = list(leaf_params(policy))

    def adapted(*tensors):
        out = adapt_steps(policy, dict(zip(names, tensors)), batches, keys, lrs, create_graph=True,
                          estimator=estimator)
        return tuple(out[k] for k in names)

    inputs = tuple(leaf_params(policy).values())
    _, jv = torch.autograd.functional.jvp(adapted, inputs, tuple(v[k] for k in names))
    _, jtu = torch.autograd.functional.vjp(adapted, inputs, tuple(u[k] for k in names))
    return dict(zip(names, jv)), dict(zip(names, jtu))


@pytest.mark.parametrize("rule", [None, "meta-sgd", "kfo", "kfo-psd"])
@pytest.mark.parametrize("behaviour", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("estimator", ["reinforce", "lvc"])
@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_jacobian_products_match_autograd(algo, estimator, steps, behaviour, rule):
    """J v and J^T u of the whole inner chain equal autograd's to round-off, for MAML (every parameter, log sigma
    included) and ANIL (the head), one and two steps, with and without a behaviour policy (lvc's rho != 1), with
    SGD and each learned inner rule (its factors are meta-parameters: J reaches them too)."""
    policy = tiny_policy()
    keys, lrs = adapted_keys(policy, algo), [0.3, 0.2][:steps]
    with_rule(policy, keys, rule)
    batches = [fake_batch(10 + i) for i in range(steps)]
    if behaviour:
        batches = [with_behaviour(policy, b, 20 + i) for i, b in enumerate(batches)]
    gen = torch.Generator().manual_seed(5)
    params = leaf_params(policy)
    reference = adapted_values(policy, params, batches, keys, lrs, estimator)  # by autograd
    chain, adapted = InnerChain.through(policy, params, batches, keys, lrs, estimator, first_order=False)
    for k in params:  # the chain's own points: the inner loop's result to round-off
        torch.testing.assert_close(adapted[k], reference[k], rtol=1e-12, atol=1e-14)
    v = {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()}
    u = {k: torch.randn(reference[k].shape, generator=gen, dtype=p.dtype) for k, p in params.items()}
    jv, jtu = autograd_products(policy, batches, keys, lrs, estimator, v, u)
    closed_jv, closed_jtu = chain.jvp(v), chain.vjp(u)
    for k in params:
        torch.testing.assert_close(closed_jv[k], jv[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(closed_jtu[k], jtu[k], rtol=1e-10, atol=1e-12)
    # the inner step really moves J away from the identity on the adapted keys
    assert any(not torch.allclose(closed_jv[k], v[k].expand_as(closed_jv[k])) for k in keys)


def test_lvc_adds_the_outer_product_term():
    """lvc's J differs from reinforce's by -lr * E[coef (grad log pi . v) grad log pi] (ProMP's extra term)."""
    policy = tiny_policy()
    keys, batch = adapted_keys(policy, "maml"), fake_batch(3)
    params = leaf_params(policy)
    gen = torch.Generator().manual_seed(1)
    v = {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()}
    lvc = InnerChain(policy, [params], [batch], keys, [0.3], "lvc", False).jvp(v)
    reinforce = InnerChain(policy, [params], [batch], keys, [0.3], "reinforce", False).jvp(v)
    # the extra term by autograd: per-sample gradients of log pi, weighted as the inner loss weighs them
    ep = batch.episodes
    names = list(params)
    mask = ep.mask
    coef = -(mask * batch.advantages) / mask.sum((1, 2), keepdim=True)
    extra = {k: torch.zeros(K, *params[k].shape, dtype=torch.float64) for k in names}
    for task in range(K):
        for t in range(ep.mask.shape[1]):
            for n in range(ep.mask.shape[2]):
                if ep.mask[task, t, n] == 0:
                    continue
                mean, log_std = forward(policy, params, ep.observations[task, t, n])
                grads = torch.autograd.grad(log_prob(mean, log_std, ep.actions[task, t, n]), [params[k] for k in names])
                dot = sum((g * v[k]).sum() for g, k in zip(grads, names))
                for g, k in zip(grads, names):
                    extra[k][task] += coef[task, t, n] * dot * g
    for k in names:
        torch.testing.assert_close(lvc[k] - reinforce[k], -0.3 * extra[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", [None, "kfo"])
@pytest.mark.parametrize("subsample", [1.0, 0.5])
@pytest.mark.parametrize("estimator", ["reinforce", "lvc"])
@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_closed_form_gradient_and_fisher_equal_autograd_path(algo, estimator, subsample, rule):
    """The meta-gradient, surrogate and every Fisher-vector product of the closed-form path equal the autograd
    path's to round-off, chunked, with two inner steps, with the Fisher's own subsample, with SGD and KFO."""
    policy = tiny_policy()
    keys, lrs = adapted_keys(policy, algo), [0.3, 0.2]
    with_rule(policy, keys, rule)
    meta = fake_meta(policy, keys, lrs)
    fvp_meta = subsample_episodes(meta, subsample)
    kwargs = dict(first_order=False, fvp_meta=fvp_meta, task_chunk=2, estimator=estimator)
    loss_a, g_a, fvp_a = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, closed_form=False,
                                               **kwargs)
    loss_c, g_c, fvp_c = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, closed_form=True,
                                               **kwargs)
    torch.testing.assert_close(loss_c, loss_a, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_c, g_a, rtol=1e-10, atol=1e-13)
    v = torch.randn(g_a.shape, generator=torch.Generator().manual_seed(2), dtype=g_a.dtype)
    torch.testing.assert_close(fvp_c(v), fvp_a(v), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("rule", [None, "meta-sgd", "kfo"])
def test_first_order_closed_form_matches_autograd(rule):
    """First order drops the inner gradient's derivative, not the learned rule's: its factors still move theta'."""
    policy = tiny_policy()
    keys, lrs = adapted_keys(policy, "maml"), [0.3]
    with_rule(policy, keys, rule)
    meta = fake_meta(policy, keys, lrs)
    out = [meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=True, closed_form=c)
           for c in (False, True)]
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-10, atol=1e-13)
    v = torch.randn(out[0][1].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(out[1][2](v), out[0][2](v), rtol=1e-10, atol=1e-13)


def test_closed_form_covers_reinforce_and_lvc_with_any_rule():
    policy = tiny_policy()
    assert supported(policy, "reinforce") and supported(policy, "lvc") and not supported(policy, "dice")
    attach(policy, adapted_keys(policy, "anil"), "kfo", False)
    assert supported(policy, "reinforce") and not supported(policy, "dice")
