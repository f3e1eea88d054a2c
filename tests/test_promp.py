"""ProMP's outer loop: its first step is a gradient step on the meta-gradient, it lowers its objective, and a
trainer with it is repeatable, resumes exactly (the optimiser's moments are checkpointed) and learns on nav2d."""

import pytest
import torch

from metarl.algorithm.metalearner import meta_gradient_and_fvp
from metarl.algorithm.policy import adapted_keys, meta_params
from metarl.algorithm.promp import make_optimizer, promp_step
from metarl.config import Config
from metarl.trainer import Trainer, logged_metrics
from tests.test_metalearner import fake_meta, leaf_params, tiny_policy

SMALL = dict(env="nav2d", meta_batch_size=10, episodes_per_task=10, eval_tasks=10, eval_episodes_per_task=10,
             eval_steps=1, sampler_threads=1, outer="promp", estimator="lvc")


@pytest.mark.parametrize("estimator", ["reinforce", "lvc"])
@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_first_sgd_step_is_minus_the_meta_gradient(algo, estimator):
    """At the sampling parameters the ratio is 1 (no clipping) and the inner KL is minimal (no penalty gradient),
    so one SGD step moves theta by -lr times TRPO's meta-gradient of the same estimator."""
    policy = tiny_policy()
    keys = adapted_keys(policy, algo)
    lrs = [0.3, 0.2]
    meta = fake_meta(policy, keys, lrs)
    _, g, _ = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=False,
                                    estimator=estimator)
    before = torch.cat([p.detach().reshape(-1).clone() for p in policy.parameters()])
    out = promp_step(policy, meta, keys, lrs, make_optimizer(policy, "sgd", 0.05), first_order=False,
                     estimator=estimator, clip=0.3, steps=1, kl_coef=1.0, task_chunk=2)
    after = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    torch.testing.assert_close(after, before - 0.05 * g, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.tensor(out["surrogate_before"], dtype=torch.float64),
                               -meta.post.advantages.sum((1, 2)).div(meta.post.episodes.mask.sum((1, 2))).mean())


def _objective_with_separate_forwards(policy, params, meta, ref, keys, lrs, estimator, clip, kl_coef):
    """ProMP's loss written out as before the inner step's forward was shared: the KL term's own forward pass."""
    import dataclasses

    from metarl.algorithm.metalearner import adapt, masked_task_mean
    from metarl.algorithm.policy import forward, kl_divergence, log_prob

    kls = []
    for i, (batch, lr) in enumerate(zip(meta.inner, lrs)):
        mean, log_std = forward(policy, params, batch.episodes.observations)
        kls.append(masked_task_mean(kl_divergence(ref.means[i], ref.log_stds[i], mean, log_std),
                                    batch.episodes.mask).mean())
        weighted = dataclasses.replace(batch, behaviour_log_prob=ref.log_probs[i])
        params = adapt(policy, params, weighted, keys, lr, create_graph=True, estimator=estimator)
    mean, log_std = forward(policy, params, meta.post.episodes.observations)
    ratio = torch.exp(log_prob(mean, log_std, meta.post.episodes.actions) - meta.old_log_prob)
    adv = meta.post.advantages
    clipped = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    return -masked_task_mean(clipped, meta.post.episodes.mask).mean() + kl_coef * torch.stack(kls).mean()


@pytest.mark.parametrize("inner_optimizer", ["sgd", "meta-sgd"])
@pytest.mark.parametrize("estimator", ["lvc", "dice"])
@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_the_shared_inner_forward_gives_the_objective_and_gradient_of_separate_forwards(algo, estimator,
                                                                                       inner_optimizer):
    """The inner-KL penalty reads the inner step's own forward pass (adapt_and_forward): the same loss and
    meta-gradient as a second forward of the batch, away from the sampling parameters (where the KL's gradient is
    not zero), over two inner steps, with a learned inner rule's factors among the parameters."""
    from metarl.algorithm import promp
    from metarl.algorithm.inner_optimizers import attach

    policy = tiny_policy()
    if inner_optimizer != "sgd":
        attach(policy, adapted_keys(policy, algo), inner_optimizer)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if name.startswith("inner_rule."):
                    p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype))
    keys = adapted_keys(policy, algo)
    lrs = [0.3, 0.2]
    meta = fake_meta(policy, keys, lrs, old_offset=0.05)
    ref = promp._reference(policy, meta_params(policy), meta, keys, lrs, estimator)
    gen = torch.Generator().manual_seed(7)
    moved = {k: (v.detach() + 0.05 * torch.randn(v.shape, generator=gen, dtype=v.dtype)).requires_grad_(True)
             for k, v in meta_params(policy).items()}
    shared = promp._objective(policy, moved, meta, ref, keys, lrs, first_order=False, estimator=estimator, clip=0.2,
                              kl_coef=0.7)[0]
    separate = _objective_with_separate_forwards(policy, moved, meta, ref, keys, lrs, estimator, 0.2, 0.7)
    torch.testing.assert_close(shared, separate, rtol=1e-12, atol=1e-14)
    grads = torch.autograd.grad(shared, list(moved.values()))
    expected = torch.autograd.grad(separate, list(moved.values()))
    for name, a, b in zip(moved, grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    assert any(g.abs().max() > 0 for g in grads)


def test_several_adam_steps_lower_the_objective_and_report_kl_and_clipping():
    policy = tiny_policy()
    keys = adapted_keys(policy, "maml")
    meta = fake_meta(policy, keys, [0.3])
    start = {k: v.detach().clone() for k, v in meta_params(policy).items()}
    out = promp_step(policy, meta, keys, [0.3], make_optimizer(policy, "adam", 1e-3), first_order=False,
                     estimator="lvc", clip=0.2, steps=5, kl_coef=5e-4, task_chunk=2)
    assert out["loss_after"] < out["loss_before"]
    assert out["kl"] > 0 and out["inner_kl"] > 0 and 0 <= out["clip_fraction"] <= 1
    assert any(not torch.equal(start[k], v) for k, v in meta_params(policy).items())


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_promp_trainer_is_repeatable_resumes_exactly_and_logs_what_it_documents(schedule):
    def fresh():
        return Trainer(Config(seed=5, iterations=3, promp_lr_schedule=schedule,
                              **{**SMALL, "meta_batch_size": 4, "episodes_per_task": 4}))

    straight = fresh()
    metrics = [straight.step() for _ in range(3)]
    assert {k for k in metrics[0] if "/" in k} == set(logged_metrics(straight.cfg))
    first = fresh()
    first.step()
    state = first.state_dict()
    assert "exp_avg" in str(state["outer_optimizer"])  # Adam's moments travel with the checkpoint
    resumed = fresh()
    resumed.load_state_dict(state)
    again = [resumed.step() for _ in range(2)]
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith(("time/", "threads/"))}  # noqa: E731
    assert [strip(m) for m in again] == [strip(m) for m in metrics[1:]]
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)


def test_promp_with_lvc_learns_on_nav2d():
    trainer = Trainer(Config(algo="maml", seed=0, **SMALL))
    start = trainer.evaluate()
    for _ in range(12):
        trainer.step()
    end = trainer.evaluate()
    assert end["return_step_1"] > start["return_step_1"] + 30, (start, end)


def test_the_linear_schedule_falls_from_promp_lr_to_its_last_share_and_the_trainer_steps_with_it():
    """'linear' takes promp_lr at the first iteration and promp_lr / iterations at the last (SB3's linear schedule);
    the trainer sets it on its optimiser before each update and logs it; 'constant' is promp_lr throughout."""
    from metarl.algorithm.promp import scheduled_lr

    assert [scheduled_lr(1e-3, "linear", done, 4) for done in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert {scheduled_lr(1e-3, "constant", done, 4) for done in range(4)} == {1e-3}
    with pytest.raises(ValueError, match="'cosine' is not one of constant, linear"):
        scheduled_lr(1e-3, "cosine", 0, 4)
    trainer = Trainer(Config(seed=5, iterations=4, promp_lr_schedule="linear", promp_optimizer="sgd", promp_steps=1,
                             **{**SMALL, "meta_batch_size": 2, "episodes_per_task": 2}))
    for done in range(3):
        before = [p.detach().clone() for p in trainer.policy.parameters()]
        metrics = trainer.step()
        lr = 1e-3 * (1 - done / 4)
        assert metrics["promp/lr"] == pytest.approx(lr)
        # one plain SGD step: each parameter moved by lr times its gradient
        for p, b in zip(trainer.policy.parameters(), before):
            if p.grad is not None:
                torch.testing.assert_close(p.detach(), b - lr * p.grad, rtol=1e-5, atol=1e-7)


def test_a_trust_region_shrinks_an_update_that_crosses_it_along_its_line_and_a_wide_one_changes_nothing():
    """promp_max_kl: where the KL to the sampling policy after the iteration's steps passes the region, the update is
    halved until the KL is inside (or undone), the parameters staying on the line from the start to the full
    update; the final measurements are of that state. A region the update stays inside changes nothing."""
    policy = tiny_policy()
    keys = adapted_keys(policy, "maml")
    meta = fake_meta(policy, keys, [0.3])
    start = {k: v.detach().clone() for k, v in meta_params(policy).items()}

    def steps(max_kl):
        policy.load_state_dict(start)
        out = promp_step(policy, meta, keys, [0.3], make_optimizer(policy, "adam", 1e-2), first_order=False,
                         estimator="lvc", clip=0.2, steps=5, kl_coef=5e-4, task_chunk=2, max_kl=max_kl)
        return out, {k: v.detach().clone() for k, v in meta_params(policy).items()}

    free, free_params = steps(None)
    assert free["kl"] > 0 and free["update_kept"] == 1.0
    wide, wide_params = steps(free["kl"] * 1.01)  # inside: ProMP's own iteration
    assert wide == free and all(torch.equal(wide_params[k], free_params[k]) for k in free_params)
    region = free["kl"] / 4
    shrunk, shrunk_params = steps(region)
    assert 0 < shrunk["update_kept"] < 1 and shrunk["kl"] <= region
    kept = shrunk["update_kept"]
    for k, v in shrunk_params.items():  # a fraction `kept` of the way along the full update
        torch.testing.assert_close(v, start[k] + kept * (free_params[k] - start[k]), rtol=1e-5, atol=1e-7)
    assert steps(free["kl"] * 1e-12)[0]["update_kept"] == 0.0  # nothing inside: undone
