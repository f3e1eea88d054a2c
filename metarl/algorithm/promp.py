"""ProMP's outer loop (Rothfuss, Lee, Clavera, Asfour, Abbeel, "ProMP: Proximal Meta-Policy Search", ICLR 2019).

In place of TRPO's one constrained step, `steps` gradient steps (default Adam) per meta-iteration on the same
episodes minimise

    L(theta) = mean_k -E[min(r A, clip(r, 1 - eps, 1 + eps) A)] + coef * mean_i mean_k KL(pi_i^old || pi_i),

with r = pi_{theta'_k}(a|s) / pi_old(a|s) on the post-adaptation episodes (PPO's clipped surrogate, Schulman et
al. 2017) and, for each inner step i, the KL between the policy that sampled inner batch i and the one the current
theta gives before step i, on batch i's observations (the paper's eq. 12, its fixed-penalty form). As in the ProMP
code, the inner step is importance-weighted by the sampling policy once theta has moved (`Batch.
behaviour_log_prob`); the paper pairs the loop with the `lvc` estimator. Defaults are the ProMP code's
(run_scripts/pro-mp_run_mujoco.py: 5 steps, clip 0.3, KL coefficient 5e-4, Adam at 1e-3).
"""

from __future__ import annotations

import dataclasses

import torch

from metarl.algorithm.metalearner import MetaBatch, adapt_and_forward, adapted_values, masked_task_mean, task_chunks
from metarl.algorithm.policy import GaussianMLP, Params, forward, kl_divergence, log_prob

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
SCHEDULES = ("constant", "linear")
# the trust region's halvings of an update that crossed it before the update is undone
BACKTRACK_STEPS = 10


def scheduled_lr(lr: float, schedule: str, done: int, iterations: int) -> float:
    """The optimiser's step size for the meta-iteration after `done` completed ones of `iterations`: `lr` throughout
    ('constant'), or lr * (1 - done / iterations), from lr down to lr / iterations at the last ('linear'). A function
    of the iteration alone, so a resumed run takes the same steps (a run extended to more iterations re-spreads the
    rest of its schedule)."""
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * (1.0 - done / iterations)
    raise ValueError(f"promp_lr_schedule {schedule!r} is not one of {', '.join(SCHEDULES)}")


def make_optimizer(policy: GaussianMLP, name: str, lr: float) -> torch.optim.Optimizer:
    """The outer loop's optimiser over the policy's meta-parameters (its state belongs in checkpoints)."""
    return OPTIMIZERS[name](policy.parameters(), lr=lr)


@dataclasses.dataclass
class _Reference:
    """The sampling policies of the inner batches, detached: per inner step its mean, log-std and log-probs."""

    means: list[torch.Tensor]
    log_stds: list[torch.Tensor]
    log_probs: list[torch.Tensor]


def _reference(policy: GaussianMLP, params: Params, meta: MetaBatch, keys: list[str], lrs: list[float],
               estimator: str) -> _Reference:
    ref = _Reference([], [], [])
    # copies: views of the parameters (an expanded log-std) would change under the optimiser's in-place steps
    current = {k: v.detach().clone() for k, v in params.items()}
    for batch, lr in zip(meta.inner, lrs):
        with torch.no_grad():
            mean, log_std = forward(policy, current, batch.episodes.observations)
        ref.means.append(mean)
        ref.log_stds.append(log_std)
        ref.log_probs.append(log_prob(mean, log_std, batch.episodes.actions))
        current = adapted_values(policy, current, [batch], keys, [lr], estimator)
    return ref


def _objective(policy: GaussianMLP, params: Params, meta: MetaBatch, ref: _Reference, keys: list[str],
               lrs: list[float], *, first_order: bool, estimator: str, clip: float, kl_coef: float):
    """ProMP's loss for the tasks of `meta` and its parts: (loss, surrogate, inner KL per step, outer KL, clip
    fraction)."""
    inner_kls = []
    for i, (batch, lr) in enumerate(zip(meta.inner, lrs)):
        weighted = dataclasses.replace(batch, behaviour_log_prob=ref.log_probs[i])
        # the inner step's own forward pass serves the KL term too: one forward and backward over the batch
        params, (mean, log_std) = adapt_and_forward(policy, params, weighted, keys, lr,
                                                    create_graph=not first_order, estimator=estimator)
        inner_kls.append(masked_task_mean(kl_divergence(ref.means[i], ref.log_stds[i], mean, log_std),
                                          batch.episodes.mask).mean())
    ep = meta.post.episodes
    mean, log_std = forward(policy, params, ep.observations)
    ratio = torch.exp(log_prob(mean, log_std, ep.actions) - meta.old_log_prob)
    adv = meta.post.advantages
    clipped = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    surrogate = -masked_task_mean(clipped, ep.mask).mean()
    inner_kl = torch.stack(inner_kls)
    loss = surrogate + kl_coef * inner_kl.mean()
    with torch.no_grad():
        outer_kl = masked_task_mean(kl_divergence(meta.old_mean, meta.old_log_std, mean, log_std), ep.mask).mean()
        clip_fraction = masked_task_mean(((ratio - 1).abs() > clip).to(ratio.dtype), ep.mask).mean()
    return loss, surrogate.detach(), inner_kl.detach(), outer_kl, clip_fraction


def promp_step(policy: GaussianMLP, meta: MetaBatch, keys: list[str], lrs: list[float], optimizer:
               torch.optim.Optimizer, *, first_order: bool, estimator: str, clip: float, steps: int,
               kl_coef: float, task_chunk: int, reduce=None, max_kl: float | None = None) -> dict:
    """`steps` optimiser steps of ProMP's objective on `meta`, in place; returns metrics (first and last pass).

    Each step sums the objective's gradient chunk by chunk of `task_chunk` tasks (the loss is a mean over tasks),
    so memory is one chunk's graph. The metrics of the state after the last step come from one more pass.
    With `max_kl`, a trust region on the iteration's update: when the mean KL between the sampling post-adaptation
    policy and the one after the `steps` steps exceeds it, the update is shrunk back toward where the iteration
    started (halved, up to BACKTRACK_STEPS times, else undone) until the KL is inside: TRPO's backtracking line search
    (Schulman et al. 2015) on ProMP's whole update. An iteration inside the region is ProMP's own; the optimiser's
    moments keep the full update.
    `reduce` turns a mean over `meta`'s tasks into the whole meta-batch's when the tasks are split over ranks
    (metarl.distributed: World.mean): applied to each step's gradient and to the metrics.
    """
    reduce = reduce or (lambda x: x)
    params = dict(policy.named_parameters())
    # the sampling policy's log-std may be a view of a parameter (ANIL does not adapt it): keep its value
    meta = dataclasses.replace(meta, old_mean=meta.old_mean.clone(), old_log_std=meta.old_log_std.clone())
    ref = _reference(policy, params, meta, keys, lrs, estimator)

    def chunks():
        for tasks, part, share in task_chunks(meta, task_chunk):
            part_ref = _Reference(*[[x[tasks] for x in xs] for xs in (ref.means, ref.log_stds, ref.log_probs)])
            yield part, part_ref, share

    def run(update: bool) -> dict:
        totals = {"loss": 0.0, "surrogate": 0.0, "inner_kl": 0.0, "outer_kl": 0.0, "clip_fraction": 0.0}
        if update:
            optimizer.zero_grad(set_to_none=True)
        # the metrics pass differentiates only the inner step's gradient: the other parameters enter as constants
        at = params if update else {k: v.detach().requires_grad_(k in keys) for k, v in params.items()}
        for part, part_ref, share in chunks():
            with torch.enable_grad():
                loss, surrogate, inner_kl, outer_kl, clip_fraction = _objective(
                    policy, at, part, part_ref, keys, lrs, first_order=first_order or not update,
                    estimator=estimator, clip=clip, kl_coef=kl_coef)
                if update:
                    (loss * share).backward()
            for name, value in zip(totals, (loss, surrogate, inner_kl.mean(), outer_kl, clip_fraction)):
                totals[name] += float(value.detach()) * share
        # reduced: every rank reads the same KL, so the ranks shrink an update together
        summed = dict(zip(totals, reduce(torch.tensor(list(totals.values()), dtype=torch.float64)).tolist()))
        if update:
            _reduce_grads(policy, reduce)
            optimizer.step()
        return summed

    plist = list(policy.parameters())
    start = [p.detach().clone() for p in plist] if max_kl is not None else None
    first = run(update=True)
    for _ in range(steps - 1):
        run(update=True)
    last, kept = run(update=False), 1.0
    if max_kl is not None and last["outer_kl"] > max_kl:  # over the trust region: shrink the update until inside
        end = [p.detach().clone() for p in plist]
        for _ in range(BACKTRACK_STEPS):
            kept *= 0.5
            _blend(plist, start, end, kept)
            last = run(update=False)
            if last["outer_kl"] <= max_kl:
                break
        else:
            kept = 0.0
            _blend(plist, start, end, kept)
            last = run(update=False)
    return {"surrogate_before": first["surrogate"], "surrogate_after": last["surrogate"],
            "loss_before": first["loss"], "loss_after": last["loss"], "kl": last["outer_kl"],
            "inner_kl": last["inner_kl"], "clip_fraction": last["clip_fraction"], "update_kept": kept,
            "grad_norm": float(torch.cat([p.grad.reshape(-1) for p in policy.parameters()
                                          if p.grad is not None]).norm())}


def _blend(params: list[torch.Tensor], before: list[torch.Tensor], after: list[torch.Tensor], fraction: float) -> None:
    """Set each parameter to before + fraction * (after - before), in place."""
    with torch.no_grad():
        for p, b, a in zip(params, before, after):
            p.copy_(torch.lerp(b, a, fraction))


def _reduce_grads(policy: GaussianMLP, reduce) -> None:
    """Every parameter's gradient replaced by reduce(it), in one call over their concatenation (one all-reduce
    across ranks); a parameter without a gradient keeps none, as the optimiser expects."""
    with_grad = [p for p in policy.parameters() if p.grad is not None]
    flat = reduce(torch.cat([p.grad.reshape(-1) for p in with_grad]))
    offset = 0
    for p in with_grad:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()
