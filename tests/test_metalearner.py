"""Gradients of the MAML/ANIL meta-learner against finite differences and their definitions (float64, tiny policy)."""

import pytest
import torch

from metarl.algorithm.metalearner import (
    Batch,
    MetaBatch,
    adapt,
    adapt_steps,
    adapted_values,
    inner_loss,
    meta_gradient_and_fvp,
    meta_objective,
    post_adaptation_terms,
    subsample_episodes,
    task_slice,
    trpo_step,
)
from metarl.algorithm.policy import GaussianMLP, adapted_keys, forward, log_prob, meta_params
from metarl.sampling.sampler import Episodes

K, T, N, OBS, ACT = 3, 4, 2, 2, 2


def tiny_policy(seed=0):
    gen = torch.Generator().manual_seed(seed)
    policy = GaussianMLP(OBS, ACT, hidden_sizes=(5, 4), init_log_std=-0.3, generator=gen).double()
    with torch.no_grad():  # non-zero biases and log-stds so that every parameter matters
        for p in policy.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return policy


def fake_batch(seed, pad=True) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(K, T, N, OBS, generator=gen, dtype=torch.float64)
    actions = torch.randn(K, T, N, ACT, generator=gen, dtype=torch.float64)
    rewards = torch.randn(K, T, N, generator=gen, dtype=torch.float64)
    mask = torch.ones(K, T, N, dtype=torch.float64)
    if pad:
        mask[0, 2:, 1] = 0.0  # one episode of task 0 ended after 2 steps
    adv = torch.randn(K, T, N, generator=gen, dtype=torch.float64) * mask
    return Batch(Episodes(obs, actions, rewards * mask, mask), adv)


def fake_meta(policy, keys, lrs, seed=1, old_offset=0.0) -> MetaBatch:
    """Inner and post batches; the old policy is the adapted current one (as in training), shifted by old_offset."""
    inner = [fake_batch(seed + i) for i in range(len(lrs))]
    post = fake_batch(seed + 100)
    params = {k: v.detach().requires_grad_(True) for k, v in meta_params(policy).items()}
    adapted = adapt_steps(policy, params, inner, keys, lrs, create_graph=False)
    with torch.no_grad():
        mean, log_std = forward(policy, adapted, post.episodes.observations)
        mean = mean + old_offset
        old_lp = log_prob(mean, log_std, post.episodes.actions)
    return MetaBatch(inner, post, mean, log_std, old_lp)


def leaf_params(policy):
    return {k: v.detach().clone().requires_grad_(True) for k, v in meta_params(policy).items()}


def finite_difference(fn, params, eps=1e-6):
    """Central differences of scalar fn(params) for every entry of every tensor, flat in params' order."""
    out = []
    for name, value in params.items():
        flat = value.detach().reshape(-1)
        for i in range(flat.numel()):
            plus = {k: v.detach().clone() for k, v in params.items()}
            minus = {k: v.detach().clone() for k, v in params.items()}
            plus[name].view(-1)[i] += eps
            minus[name].view(-1)[i] -= eps
            out.append((fn(plus) - fn(minus)) / (2 * eps))
    return torch.tensor(out, dtype=torch.float64)


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def surrogate_finite_difference(policy, meta, keys, lrs, params):
    """Central differences of the second-order meta-objective's surrogate loss at `params`."""
    return finite_difference(lambda p: float(meta_objective(policy, {k: v.requires_grad_(True) for k, v in p.items()},
                                                            meta, keys, lrs, False, create_graph=False)[0].detach()),
                             params)


def brute_force_kl_hvp(policy, meta, keys, lrs, seed=3):
    """(v, H v): a random v and the Hessian of the post-adaptation KL in the meta-parameters times v, by double
    backward through the inner step (what J^T H J must equal where the KL is minimal)."""
    params = leaf_params(policy)
    _, kl = meta_objective(policy, params, meta, keys, lrs, first_order=False)
    kl_grad = flat(torch.autograd.grad(kl, list(params.values()), create_graph=True))
    v = torch.randn(kl_grad.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v, flat(torch.autograd.grad(kl_grad @ v, list(params.values())))


def test_inner_gradient_matches_finite_differences():
    policy, batch = tiny_policy(), fake_batch(0)
    params = leaf_params(policy)
    grads = torch.autograd.grad(inner_loss(policy, params, batch).sum(), list(params.values()))
    fd = finite_difference(lambda p: float(inner_loss(policy, p, batch).sum()), params)
    torch.testing.assert_close(flat(grads), fd, rtol=1e-6, atol=1e-8)


def test_inner_step_is_sgd_on_each_tasks_own_loss():
    policy, batch = tiny_policy(), fake_batch(0)
    keys = adapted_keys(policy, "maml")
    adapted = adapt(policy, leaf_params(policy), batch, keys, lr=0.1, create_graph=False)
    for k in range(K):
        one = Batch(Episodes(*(x[k:k + 1] for x in (batch.episodes.observations, batch.episodes.actions,
                                                     batch.episodes.rewards, batch.episodes.mask))),
                    batch.advantages[k:k + 1])
        params = leaf_params(policy)
        grads = torch.autograd.grad(inner_loss(policy, params, one).sum(), list(params.values()))
        for (name, value), grad in zip(params.items(), grads):
            torch.testing.assert_close(adapted[name][k], value - 0.1 * grad)


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_second_order_meta_gradient_matches_finite_differences(algo):
    policy = tiny_policy()
    keys = adapted_keys(policy, algo)
    lrs = [0.3, 0.2]  # two inner steps: the chain of adaptations is differentiated too
    meta = fake_meta(policy, keys, lrs, old_offset=0.05)  # ratio != 1 everywhere
    params = leaf_params(policy)
    _, g, _ = meta_gradient_and_fvp(policy, params, meta, keys, lrs, first_order=False)
    torch.testing.assert_close(g, surrogate_finite_difference(policy, meta, keys, lrs, params), rtol=1e-5, atol=1e-8)
    if algo == "anil":  # the outer loop still trains the body under ANIL
        body = sum(p.numel() for n, p in params.items() if n.startswith("body."))
        assert g[:body].abs().max() > 1e-6


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_first_order_meta_gradient_is_post_gradient_at_adapted_params(algo):
    """First-order: d/d theta' of the surrogate, evaluated at theta'_k and summed over tasks (no inner Hessian)."""
    policy = tiny_policy()
    keys = adapted_keys(policy, algo)
    meta = fake_meta(policy, keys, [0.3], old_offset=0.05)
    _, g, _ = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, [0.3], first_order=True)
    adapted = adapt(policy, leaf_params(policy), meta.inner[0], keys, 0.3, create_graph=False)
    leaves = {k: v.detach().requires_grad_(True) for k, v in adapted.items()}
    loss, _ = post_adaptation_terms(policy, leaves, meta)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    expected = [gr.sum(0) if k in keys else gr for k, gr in zip(leaves, grads)]
    torch.testing.assert_close(g, flat(expected))
    # and it differs from the second-order gradient
    _, g2, _ = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, [0.3], first_order=False)
    assert not torch.allclose(g, g2)


@pytest.mark.parametrize("task_chunk", [None, 2])
@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_fisher_vector_product_equals_kl_hessian_through_inner_step(algo, task_chunk):
    """J^T H J v equals the Hessian of KL(theta'(theta)) at theta_old computed by brute-force double backward,
    whether the Fisher is built over all tasks at once or in chunks (2 + 1 of the K = 3 tasks)."""
    policy = tiny_policy()
    keys = adapted_keys(policy, algo)
    lrs = [0.3]
    meta = fake_meta(policy, keys, lrs)  # old policy = adapted current one: the KL is minimal at theta_old
    _, _, fvp = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=False,
                                      task_chunk=task_chunk)
    v, direct = brute_force_kl_hvp(policy, meta, keys, lrs)
    torch.testing.assert_close(fvp(v), direct, rtol=1e-7, atol=1e-10)
    assert float(v @ fvp(v)) > 0


def test_anil_inner_step_changes_only_the_head():
    policy, batch = tiny_policy(), fake_batch(0)
    keys = adapted_keys(policy, "anil")
    assert keys == ["head.weight", "head.bias"]
    params = leaf_params(policy)
    adapted = adapt(policy, params, batch, keys, lr=0.5, create_graph=False)
    for name, value in params.items():
        if name.startswith("head."):
            assert adapted[name].shape == (K, *value.shape)
            assert not torch.equal(adapted[name][0], value)
        else:
            assert torch.equal(adapted[name], value), name  # body and log_std bit-identical


def test_maml_inner_step_changes_every_parameter():
    policy, batch = tiny_policy(), fake_batch(0)
    params = leaf_params(policy)
    adapted = adapt(policy, params, batch, adapted_keys(policy, "maml"), lr=0.5, create_graph=False)
    for name, value in params.items():
        assert adapted[name].shape == (K, *value.shape)
        assert not torch.equal(adapted[name][1], value), name


def test_batched_per_task_call_equals_per_task_calls():
    policy, batch = tiny_policy(), fake_batch(0)
    for algo in ("maml", "anil"):
        adapted = adapt(policy, leaf_params(policy), batch, adapted_keys(policy, algo), 0.5, create_graph=False)
        mean, log_std = forward(policy, adapted, batch.episodes.observations)
        for k in range(K):
            own = {n: (v[k] if v.dim() > policy.get_parameter(n).dim() else v) for n, v in adapted.items()}
            m_k, s_k = torch.func.functional_call(policy, own, (batch.episodes.observations[k],))
            torch.testing.assert_close(mean[k], m_k, rtol=0, atol=1e-12)
            torch.testing.assert_close(log_std[k], s_k, rtol=0, atol=0)


def test_unknown_algorithm_is_rejected():
    with pytest.raises(ValueError, match="'anil', 'maml'"):
        adapted_keys(tiny_policy(), "reptile")


def test_trpo_step_improves_surrogate_within_kl_bound():
    policy = tiny_policy()
    keys = adapted_keys(policy, "maml")
    meta = fake_meta(policy, keys, [0.3])
    before = {k: v.detach().clone() for k, v in meta_params(policy).items()}
    out = trpo_step(policy, meta, keys, [0.3], first_order=False, max_kl=0.01, cg_iters=10, cg_damping=1e-5,
                    ls_max_steps=15, ls_backtrack_ratio=0.8)
    assert out["step_accepted"] == 1.0
    assert out["surrogate_after"] < out["surrogate_before"]
    assert 0 < out["kl"] <= 0.01
    assert any(not torch.equal(before[k], v) for k, v in meta_params(policy).items())


def test_trpo_step_restores_parameters_when_no_step_is_accepted(monkeypatch):
    import metarl.algorithm.metalearner as metalearner
    policy = tiny_policy()
    keys = adapted_keys(policy, "anil")
    meta = fake_meta(policy, keys, [0.3])
    before = {k: v.detach().clone() for k, v in meta_params(policy).items()}
    # An ascent direction (+g instead of the solution of F x = -g): no fraction of it lowers the surrogate.
    monkeypatch.setattr(metalearner, "conjugate_gradient", lambda fvp, b, iters, return_product: (-b, fvp(-b)))
    out = trpo_step(policy, meta, keys, [0.3], first_order=False, max_kl=0.01, cg_iters=10, cg_damping=1e-5,
                    ls_max_steps=5, ls_backtrack_ratio=0.5)
    assert out["step_accepted"] == 0.0 and out["line_search_steps"] == 5
    assert out["surrogate_after"] == out["surrogate_before"]
    for k, v in meta_params(policy).items():
        assert torch.equal(before[k], v), k


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_gradient_by_task_chunks_equals_the_whole_batch_at_once(algo):
    """Memory-bounded chunks of tasks and a separate Fisher batch object compute the same numbers."""
    policy = tiny_policy()
    keys = adapted_keys(policy, algo)
    meta = fake_meta(policy, keys, [0.3], old_offset=0.05)
    loss, g, fvp = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, [0.3], first_order=False)
    same_data = task_slice(meta, slice(None))  # another MetaBatch object holding the same episodes
    loss_c, g_c, fvp_c = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, [0.3], first_order=False,
                                               fvp_meta=same_data, task_chunk=1)
    torch.testing.assert_close(loss_c, loss)
    torch.testing.assert_close(g_c, g)
    v = torch.randn(g.numel(), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(fvp_c(v), fvp(v))


def test_fisher_subsample_keeps_the_first_episodes_of_every_task():
    policy = tiny_policy()
    meta = fake_meta(policy, adapted_keys(policy, "anil"), [0.3])
    half = subsample_episodes(meta, 0.5)
    assert half.post.episodes.observations.shape == (K, T, 1, OBS)
    assert torch.equal(half.inner[0].advantages, meta.inner[0].advantages[:, :, :1])
    assert torch.equal(half.old_log_prob, meta.old_log_prob[:, :, :1])
    assert subsample_episodes(meta, 1.0) is meta


@pytest.mark.parametrize("closed_form", [True, False])
@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_bfloat16_fisher_products_are_within_their_stated_error_and_leave_the_gradient_exact(algo, closed_form):
    """fvp_precision="bfloat16" (docs/performance.md): Fisher-vector products within 3% (norm of the difference
    over the norm; about 1% measured at realistic sizes), the loss and the meta-gradient bit-identical to float32;
    with the inner step's Jacobian in closed form (metarl/algorithm/inner_jacobian.py, the default) and by autograd."""
    k, t, n, obs, act = 4, 30, 4, 20, 6
    policy = GaussianMLP(obs, act, [64, 64], 0.0, generator=torch.Generator().manual_seed(0))
    keys = adapted_keys(policy, algo)

    def batch(seed):
        g = torch.Generator().manual_seed(seed)
        ep = Episodes(torch.randn(k, t, n, obs, generator=g), torch.randn(k, t, n, act, generator=g),
                      torch.randn(k, t, n, generator=g), torch.ones(k, t, n))
        return Batch(ep, torch.randn(k, t, n, generator=g))

    inner, post = batch(1), batch(2)
    adapted = adapted_values(policy, {k_: v.detach() for k_, v in policy.named_parameters()}, [inner], keys, [0.1])
    with torch.no_grad():
        mean, log_std = forward(policy, adapted, post.episodes.observations)
    meta = MetaBatch([inner], post, mean, log_std, log_prob(mean, log_std, post.episodes.actions))
    loss, g, fvp = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, [0.1], False, task_chunk=2,
                                         closed_form=closed_form)
    loss_b, g_b, fvp_b = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, [0.1], False, task_chunk=2,
                                               fvp_precision="bfloat16", closed_form=closed_form)
    assert torch.equal(loss, loss_b) and torch.equal(g, g_b)
    for v in (torch.randn(g.numel(), generator=torch.Generator().manual_seed(3)), g / g.norm()):
        exact, low = fvp(v), fvp_b(v)
        assert float((low - exact).norm() / exact.norm()) < 0.03
        assert not torch.equal(low, exact)  # it did run in bfloat16


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_adaptation_and_forward_by_task_chunks_give_the_same_values(algo):
    """`task_chunk` only changes how many tasks are adapted (and run forward) at once: each task's inner step is its
    own, two steps included (the second from per-task parameters)."""
    from metarl.algorithm.metalearner import adapted_values, chunked_forward
    policy = tiny_policy()
    keys, lrs = adapted_keys(policy, algo), [0.3, 0.2]
    batches = [fake_batch(30), fake_batch(31)]
    whole = adapted_values(policy, leaf_params(policy), batches, keys, lrs)
    for chunk in (1, 2, K):
        parts = adapted_values(policy, leaf_params(policy), batches, keys, lrs, task_chunk=chunk)
        assert parts.keys() == whole.keys()
        for k in whole:
            torch.testing.assert_close(parts[k], whole[k], rtol=1e-13, atol=1e-15)
        obs = batches[0].episodes.observations
        for got, want in zip(chunked_forward(policy, whole, obs, chunk), forward(policy, whole, obs)):
            torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)
    assert any(not torch.equal(whole[k], leaf_params(policy)[k]) for k in keys)  # the step moved the adapted keys
