"""Policy-gradient MAML and ANIL with a TRPO meta-update, on batches of episodes and parameter dicts.

MAML (Finn et al. 2017) and ANIL (Raghu et al. 2020) share this one code path: they differ only in `keys`, the
parameters the inner step may change (all of them vs. the head). Functions return metrics; they never log.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from metarl.algorithm.estimators import step_weights
from metarl.algorithm.fisher import GaussianKLCurvature
from metarl.algorithm.inner_jacobian import InnerChain, cast, supported
from metarl.algorithm.inner_optimizers import precondition
from metarl.algorithm.optim import backtracking_line_search, conjugate_gradient, unflatten_like
from metarl.algorithm.policy import GaussianMLP, Params, forward, kl_divergence, log_prob
from metarl.sampling.sampler import Episodes


@dataclass
class Batch:
    """Episodes with their (fixed, gradient-free) advantages: the data of one adaptation step."""

    episodes: Episodes
    advantages: torch.Tensor  # (K, T, N)
    # log-probabilities of the actions under the policy that sampled them, (K, T, N); when set, the estimators'
    # stop-gradient point (ProMP's importance-weighted inner step, metarl.algorithm.promp); None: the current parameters'
    behaviour_log_prob: torch.Tensor | None = None


def masked_task_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the (T, N) axes of each task, counting real steps only: (K, T, N) -> (K,)."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1.0)


def inner_loss(policy: GaussianMLP, params: Params, batch: Batch, estimator: str = "reinforce") -> torch.Tensor:
    """Policy-gradient loss per task, -E[w_t A_t] over real steps, shape (K,); w_t is `estimator`'s
    (metarl.algorithm.estimators: reinforce's log pi, Williams 1992; lvc; dice)."""
    return _inner_loss_at(*forward(policy, params, batch.episodes.observations), batch, estimator)


def _inner_loss_at(mean: torch.Tensor, log_std: torch.Tensor, batch: Batch, estimator: str) -> torch.Tensor:
    """inner_loss from the policy's mean and log-std on the batch's observations."""
    ep = batch.episodes
    weights = step_weights(estimator, log_prob(mean, log_std, ep.actions), ep.mask, batch.behaviour_log_prob)
    return -masked_task_mean(weights * batch.advantages, ep.mask)


def adapt(policy: GaussianMLP, params: Params, batch: Batch, keys: list[str], lr: float,
          create_graph: bool, estimator: str = "reinforce") -> Params:
    """One inner step per task on `keys`; the other parameters are returned untouched (same tensors).

    The step is -lr * P(g), P the policy's update rule (metarl.algorithm.inner_optimizers: the identity for SGD; Meta-SGD's or
    KFO's learned factors, read from `params`, so the step is differentiable in them).

    Adapted keys get a leading task axis K. With `create_graph` the result stays differentiable through the
    gradient (second-order MAML); without it the step is a constant offset (first-order). `estimator` only
    changes the result's derivative (metarl.algorithm.estimators), not its value.
    """
    return adapt_and_forward(policy, params, batch, keys, lr, create_graph, estimator)[0]


def adapt_and_forward(policy: GaussianMLP, params: Params, batch: Batch, keys: list[str], lr: float,
                      create_graph: bool, estimator: str = "reinforce"
                      ) -> tuple[Params, tuple[torch.Tensor, torch.Tensor]]:
    """adapt, and the pre-step policy's (mean, log-std) on the batch's observations: the forward pass the step's
    gradient came from, still differentiable in `params` (its graph is kept), so that a loss on the pre-step policy
    (ProMP's inner-KL penalty) takes no second forward and backward over the batch."""
    num_tasks = batch.advantages.shape[0]
    per_task = {k: params[k] if params[k].dim() > policy.get_parameter(k).dim()
                else params[k].expand(num_tasks, *params[k].shape) for k in keys}
    mean, log_std = forward(policy, {**params, **per_task}, batch.episodes.observations)
    # Summing the per-task losses gives each task's copy its own task's gradient.
    loss = _inner_loss_at(mean, log_std, batch, estimator).sum()
    grads = torch.autograd.grad(loss, [per_task[k] for k in keys], create_graph=create_graph, retain_graph=True)
    adapted = {**params, **{k: per_task[k] - lr * precondition(policy, params, k, g) for k, g in zip(keys, grads)}}
    return adapted, (mean, log_std)


def adapt_steps(policy: GaussianMLP, params: Params, batches: list[Batch], keys: list[str], lrs: list[float],
                create_graph: bool, estimator: str = "reinforce") -> Params:
    """Chain one inner step per batch (batch i was sampled with the parameters after step i)."""
    for batch, lr in zip(batches, lrs):
        params = adapt(policy, params, batch, keys, lr, create_graph, estimator)
    return params


def adapted_values(policy: GaussianMLP, params: Params, batches: list[Batch], keys: list[str],
                   lrs: list[float], estimator: str = "reinforce", task_chunk: int | None = None) -> Params:
    """The adapted parameters as plain tensors, no graph kept (for sampling, evaluation, the Fisher's point).

    With `task_chunk` the tasks are adapted that many at a time (each task's step is its own, so the values are the
    same): a chunk's activations stay in cache, about twice as fast on the CPU at the cheetah protocol."""
    num_tasks = batches[0].advantages.shape[0]
    if task_chunk and task_chunk < num_tasks:
        parts = [adapted_values(policy, task_params(policy, params, tasks), [map_batch(b, lambda x: x[tasks])
                                                                            for b in batches], keys, lrs, estimator)
                 for tasks in task_slices(num_tasks, task_chunk)]
        return {k: torch.cat([part[k] for part in parts]) if k in keys else params[k].detach() for k in params}
    fresh = {k: v.detach().requires_grad_(k in keys) for k, v in params.items()}
    adapted = adapt_steps(policy, fresh, batches, keys, lrs, create_graph=False, estimator=estimator)
    return {k: v.detach() for k, v in adapted.items()}


@dataclass
class MetaBatch:
    """What a meta-update needs: the inner-loop batches and the post-adaptation batch with its old policy."""

    inner: list[Batch]
    post: Batch
    old_mean: torch.Tensor  # post-adaptation policy at sampling time, (K, T, N, act_dim), detached
    old_log_std: torch.Tensor
    old_log_prob: torch.Tensor  # (K, T, N)


def meta_objective(policy: GaussianMLP, params: Params, meta: MetaBatch, keys: list[str], lrs: list[float],
                   first_order: bool, create_graph: bool = True,
                   estimator: str = "reinforce") -> tuple[torch.Tensor, torch.Tensor]:
    """TRPO surrogate loss and mean KL after adaptation, averaged over tasks (Finn et al. 2017, alg. 3).

    loss = -mean_k E[pi_{theta'_k}(a|s) / pi_old(a|s) A],  kl = mean_k E[KL(pi_old || pi_{theta'_k})],
    with theta'_k = adapt(theta, inner batches of task k) differentiable in theta unless `first_order`.
    """
    adapted = adapt_steps(policy, params, meta.inner, keys, lrs, create_graph=create_graph and not first_order,
                          estimator=estimator)
    return post_adaptation_terms(policy, adapted, meta)


def map_batch(b: Batch, fn) -> Batch:
    """Apply `fn` to every (K, T, N, ...) tensor of a batch (to slice tasks or episodes)."""
    ep = b.episodes
    behaviour = None if b.behaviour_log_prob is None else fn(b.behaviour_log_prob)
    return Batch(Episodes(fn(ep.observations), fn(ep.actions), fn(ep.rewards), fn(ep.mask)), fn(b.advantages),
                 behaviour)


def map_meta(meta: MetaBatch, fn) -> MetaBatch:
    """Apply `fn` to every (K, T, N, ...) tensor of a meta-batch (to slice tasks or episodes)."""
    return MetaBatch([map_batch(b, fn) for b in meta.inner], map_batch(meta.post, fn), fn(meta.old_mean),
                     fn(meta.old_log_std), fn(meta.old_log_prob))


def task_slices(num_tasks: int, chunk: int | None) -> list[slice]:
    """Consecutive slices of `chunk` tasks (one slice of all for None)."""
    chunk = chunk or num_tasks
    return [slice(start, start + chunk) for start in range(0, num_tasks, chunk)]


def task_params(policy: GaussianMLP, params: Params, tasks: slice) -> Params:
    """The parameters of a subset of tasks: per-task (adapted) tensors sliced, shared ones as they are."""
    return {k: v[tasks] if v.dim() > policy.get_parameter(k).dim() else v for k, v in params.items()}


def chunked_forward(policy: GaussianMLP, params: Params, obs: torch.Tensor,
                    task_chunk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`forward` over `task_chunk` tasks at a time (the same values; a chunk's activations stay in cache)."""
    parts = [forward(policy, task_params(policy, params, tasks), obs[tasks])
             for tasks in task_slices(obs.shape[0], task_chunk)]
    return torch.cat([mean for mean, _ in parts]), torch.cat([log_std for _, log_std in parts])


def subsample_episodes(meta: MetaBatch, fraction: float) -> MetaBatch:
    """The same meta-batch restricted to the first ceil(fraction * N) episodes of every task.

    Episodes of a task are i.i.d., so the first ones are an unbiased subsample; used for cheaper Fisher-vector
    products (as rllab's TRPO `subsample_factor`), never for the gradient or the line search.
    """
    n = meta.post.advantages.shape[2]
    keep = max(1, math.ceil(fraction * n))
    # contiguous copies: strided views would make every matmul slower
    return meta if keep >= n else map_meta(meta, lambda x: x[:, :, :keep].contiguous())


def task_slice(meta: MetaBatch, tasks: slice) -> MetaBatch:
    """The meta-batch of a subset of its tasks (views, no copy)."""
    return map_meta(meta, lambda x: x[tasks])


def task_chunks(meta: MetaBatch, chunk: int | None):
    """(tasks, the meta-batch of those tasks, their share of all tasks) for consecutive chunks of `chunk` tasks
    (all at once for None): the surrogate, the KL and their derivatives are means over tasks, so sums of shares."""
    num_tasks = meta.post.advantages.shape[0]
    for tasks in task_slices(num_tasks, chunk):
        part = task_slice(meta, tasks)
        yield tasks, part, part.post.advantages.shape[0] / num_tasks


def post_adaptation_terms(policy: GaussianMLP, adapted: Params, meta: MetaBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Surrogate loss and mean KL of the post-adaptation batch under the adapted parameters."""
    ep = meta.post.episodes
    mean, log_std = forward(policy, adapted, ep.observations)
    ratio = torch.exp(log_prob(mean, log_std, ep.actions) - meta.old_log_prob)
    loss = -masked_task_mean(ratio * meta.post.advantages, ep.mask).mean()
    kl = masked_task_mean(kl_divergence(meta.old_mean, meta.old_log_std, mean, log_std), ep.mask).mean()
    return loss, kl


def meta_gradient_and_fvp(policy: GaussianMLP, params: Params, meta: MetaBatch, keys: list[str],
                          lrs: list[float], first_order: bool, fvp_meta: MetaBatch | None = None,
                          task_chunk: int | None = None, fvp_precision: str = "float32",
                          estimator: str = "reinforce", closed_form: bool | None = None):
    """Meta-gradient g and a Fisher-vector product v -> F v, both through the inner step, at `params`.

    F is the Hessian of the post-adaptation KL as a function of the meta-parameters theta. The KL is minimal
    (zero gradient) at theta' = adapt(theta_old), so its Hessian is exactly J^T H J, with J = d theta'/d theta and H
    the KL Hessian in theta': each product needs two Jacobian products and one ordinary TRPO Fisher product,
    never third derivatives. Per chunk of `task_chunk` tasks the adaptation graph theta -> theta' is built once and
    serves everything: g = J^T (d loss / d theta') and every conjugate-gradient product (the surrogate and the KL are
    means of per-task terms, so g and F are sums over chunks; small chunks keep each operation's tensors in cache,
    benchmarks/fvp_chunks.py). `fvp_meta` (a subsample of `meta`, see `subsample_episodes`) estimates J and H from
    fewer episodes, at the exact adapted parameters. With `fvp_precision="bfloat16"` the Fisher-vector products run
    in bfloat16 at the same float32 point (in closed form: wholly in bfloat16; by autograd: the Fisher's own graphs
    under autocast); the loss and g stay float32 (docs/performance.md gives the error). `estimator` is the inner loss's (metarl.algorithm.estimators): J includes its second-order terms.
    `closed_form` (default: wherever metarl.algorithm.inner_jacobian covers the inner loop) takes J v and J^T u as
    Hessian-vector products of the inner loss in closed form instead of autograd's double backward: the same
    products to round-off, no adaptation graph kept.
    Returns (loss, g, fvp) with g and fvp's input/output flat over `params`.
    """
    if supported(policy, estimator) if closed_form is None else closed_form:
        return _closed_form_gradient_and_fvp(policy, params, meta, keys, lrs, first_order, fvp_meta, task_chunk,
                                             fvp_precision, estimator)
    names, inputs, loss_sum, g = _accumulators(params)
    parts = []
    for tasks, part, share in task_chunks(meta, task_chunk):
        adapted = adapt_steps(policy, params, part.inner, keys, lrs, create_graph=not first_order,
                              estimator=estimator)
        outputs = [adapted[k] for k in names]
        leaves = {k: v.detach().requires_grad_(True) for k, v in adapted.items()}  # theta', exact
        loss, _ = post_adaptation_terms(policy, leaves, part)
        d_loss = torch.autograd.grad(loss * share, [leaves[k] for k in names], allow_unused=True)
        g += _flat(_vjp(outputs, inputs, d_loss, retain=True), inputs)  # g = J^T d loss / d theta'
        loss_sum += loss.detach() * share
        low = fvp_precision != "float32"
        if low or (fvp_meta is not None and fvp_meta is not meta):  # the Fisher's own graph of theta -> theta'
            part = part if fvp_meta is None else task_slice(fvp_meta, tasks)
            with precision(fvp_precision, inputs[0].device):
                adapted = adapt_steps(policy, params, part.inner, keys, lrs, create_graph=not first_order,
                                      estimator=estimator)
            outputs = [adapted[k] for k in names]
        parts.append(_chunk_fvp(policy, names, inputs, outputs, leaves, part, share, fvp_precision))

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return sum(part(v) for part in parts)

    return loss_sum, g, fvp


def _accumulators(params: Params):
    """The parameters' names and tensors, and a zero loss and flat gradient to sum the chunks into."""
    names = list(params)
    inputs = [params[k] for k in names]
    loss_sum = torch.zeros((), dtype=inputs[0].dtype, device=inputs[0].device)
    g = torch.zeros(sum(p.numel() for p in inputs), dtype=inputs[0].dtype, device=inputs[0].device)
    return names, inputs, loss_sum, g


def _closed_form_gradient_and_fvp(policy: GaussianMLP, params: Params, meta: MetaBatch, keys: list[str],
                                  lrs: list[float], first_order: bool, fvp_meta: MetaBatch | None,
                                  task_chunk: int | None, fvp_precision: str, estimator: str):
    """`meta_gradient_and_fvp` with J from metarl.algorithm.inner_jacobian: per chunk, the inner chain's points and errors
    are computed once and serve g = J^T (d loss / d theta') and every product J^T H J v."""
    names, inputs, loss_sum, g = _accumulators(params)
    parts = []
    for tasks, part, share in task_chunks(meta, task_chunk):
        chain, adapted = InnerChain.through(policy, params, part.inner, keys, lrs, estimator, first_order)  # theta'
        # one forward over the post-adaptation batch at theta' serves the surrogate's gradient and the Fisher
        curvature = _post_curvature(policy, adapted, part, share)
        post = part.post
        loss, d_loss = curvature.surrogate_gradient(post.episodes.actions, part.old_log_prob, post.advantages)
        d_loss = {k: torch.zeros_like(adapted[k]) if d_loss.get(k) is None else d_loss[k] for k in names}
        with torch.no_grad():
            jt_d_loss = chain.vjp(d_loss)
            g += _flat([jt_d_loss[k] for k in names], inputs)
        loss_sum += loss
        if fvp_meta is not None and fvp_meta is not meta:  # J and H from the subsample, at the exact theta'
            part = task_slice(fvp_meta, tasks)
            chain, _ = InnerChain.through(policy, params, part.inner, keys, lrs, estimator, first_order)
            curvature = _post_curvature(policy, adapted, part, share)
        parts.append(_closed_form_chunk_fvp(names, inputs, chain, curvature, fvp_precision))

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return sum(part(v) for part in parts)

    return loss_sum, g, fvp


def _post_curvature(policy: GaussianMLP, adapted: Params, meta: MetaBatch, share: float) -> GaussianKLCurvature:
    """The KL's curvature at theta' on a chunk's post-adaptation batch, each sample weighted by its share of the
    mean KL (and of the surrogate: the same weights)."""
    mask = meta.post.episodes.mask
    weight = share * mask / mask.sum((1, 2), keepdim=True).clamp(min=1.0) / mask.shape[0]
    return GaussianKLCurvature(policy, adapted, meta.post.episodes.observations, weight)


def _closed_form_chunk_fvp(names: list[str], inputs: list[torch.Tensor], chain: InnerChain,
                           curvature: GaussianKLCurvature, fvp_precision: str):
    """v -> share * J^T H J v for one chunk, J from `chain` (metarl.algorithm.inner_jacobian), H from `curvature` (its sample
    weights carry the chunk's share)."""
    low = inputs[0].dtype if fvp_precision == "float32" else getattr(torch, fvp_precision)
    if low != inputs[0].dtype:  # every cached tensor converted once; the products then run wholly in `low`
        chain, curvature = chain.to(low), cast(curvature, low)

    @torch.no_grad()
    def fvp(v: torch.Tensor) -> torch.Tensor:
        v_parts = unflatten_like(v.to(low), dict(zip(names, inputs)))
        out = chain.vjp(curvature(chain.jvp(v_parts)))
        return _flat([out[k].to(inputs[0].dtype) for k in names], inputs)

    return fvp


def meta_gradient(policy: GaussianMLP, params: Params, meta: MetaBatch, keys: list[str], lrs: list[float],
                  first_order: bool, task_chunk: int, estimator: str = "reinforce") -> torch.Tensor:
    """The meta-gradient of the surrogate alone, flat over `params`, summed chunk by chunk (no Fisher graphs)."""
    g = torch.zeros(sum(p.numel() for p in params.values()), dtype=meta.post.advantages.dtype,
                    device=meta.post.advantages.device)
    for _, part, share in task_chunks(meta, task_chunk):
        loss, _ = meta_objective(policy, params, part, keys, lrs, first_order, estimator=estimator)
        g += _flat(torch.autograd.grad(loss * share, list(params.values()), allow_unused=True), list(params.values()))
    return g


def _vjp(outputs, inputs, w, retain: bool):
    """J^T w back through the adaptation (outputs theta'(inputs theta)); None where theta' does not depend on it."""
    pairs = [(o, x) for o, x in zip(outputs, w) if x is not None]
    return torch.autograd.grad([o for o, _ in pairs], inputs, grad_outputs=[x for _, x in pairs],
                               retain_graph=retain, allow_unused=True)


def precision(name: str, device: torch.device):
    """Autocast to bfloat16 for `name` "bfloat16" (matrix products in bfloat16, results float32); else nothing."""
    if name == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, name))


def _chunk_fvp(policy: GaussianMLP, names: list[str], inputs: list[torch.Tensor], outputs: list[torch.Tensor],
               leaves: Params, meta: MetaBatch, share: float, fvp_precision: str = "float32"):
    """v -> share * J^T H J v for the tasks of `meta` (one chunk): J of the adaptation graph inputs -> outputs,
    H the KL Hessian at `leaves` (the adapted parameters) in closed form (metarl.algorithm.fisher)."""
    mask = meta.post.episodes.mask
    weight = share * mask / mask.sum((1, 2), keepdim=True).clamp(min=1.0) / mask.shape[0]  # the KL's mean
    curvature = GaussianKLCurvature(policy, leaves, meta.post.episodes.observations, weight)

    # J v by the double-vjp trick: J^T u is linear in u, and its vjp in u with v is J v.
    dummies = [torch.zeros_like(o, requires_grad=True) for o in outputs]
    jt_dummies = torch.autograd.grad(outputs, inputs, grad_outputs=dummies, create_graph=True, allow_unused=True)
    linked = [i for i, j in enumerate(jt_dummies) if j is not None]

    def fvp(v: torch.Tensor) -> torch.Tensor:
        v_parts = unflatten_like(v, dict(zip(names, inputs)))
        jv = torch.autograd.grad([jt_dummies[i] for i in linked], dummies,
                                 grad_outputs=[v_parts[names[i]] for i in linked], retain_graph=True,
                                 allow_unused=True)
        jv = {k: torch.zeros_like(d) if x is None else x for k, x, d in zip(names, jv, dummies)}
        with precision(fvp_precision, inputs[0].device):
            hjv = curvature(jv)
        hjv = [None if hjv[k] is None else hjv[k].to(leaves[k].dtype) for k in names]
        return _flat(_vjp(outputs, inputs, hjv, retain=True), inputs)

    return fvp


def _flat(parts, like) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(t) if p is None else p).reshape(-1) for p, t in zip(parts, like)])


def trpo_step(policy: GaussianMLP, meta: MetaBatch, keys: list[str], lrs: list[float], *, first_order: bool,
              max_kl: float, cg_iters: int, cg_damping: float, ls_max_steps: int,
              ls_backtrack_ratio: float, fvp_subsample: float = 1.0, task_chunk: int = 4,
              line_search=backtracking_line_search, fvp_precision: str = "float32",
              estimator: str = "reinforce", reduce=None) -> dict:
    """One TRPO update of the policy's meta-parameters (Schulman et al. 2015), in place; returns metrics.

    Meta-gradient and Fisher-vector products both go through the inner step. The search direction solves
    F x = -g by conjugate gradient; the step is scaled to the KL bound and backtracked until the surrogate
    improves within it, else the parameters are restored. `line_search` has `backtracking_line_search`'s
    signature (a study may pass a wrapper that probes the step). `estimator`: the inner loss's
    (metarl.algorithm.estimators), in the gradient and the Fisher. `reduce` turns a mean over `meta`'s tasks into the mean
    over the whole meta-batch when the tasks are split over ranks (metarl.distributed: World.mean); every rank then
    takes the same step.
    """
    reduce = reduce or (lambda x: x)
    params = {k: p.detach().requires_grad_(True) for k, p in policy.named_parameters()}
    loss, g, local_fvp = meta_gradient_and_fvp(policy, params, meta, keys, lrs, first_order,
                                               fvp_meta=subsample_episodes(meta, fvp_subsample),
                                               task_chunk=task_chunk, fvp_precision=fvp_precision,
                                               estimator=estimator)
    loss, g = reduce(loss), reduce(g)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return reduce(local_fvp(v))

    extra = {}
    if estimator != "reinforce" and not first_order:
        # What the estimator changed: the share of the meta-gradient that reinforce's would not have.
        g_reinforce = reduce(meta_gradient(policy, params, meta, keys, lrs, first_order, task_chunk))
        extra["estimator_term_share"] = float((g - g_reinforce).norm() / g.norm().clamp(min=1e-30))

    def damped_fvp(v: torch.Tensor) -> torch.Tensor:
        return fvp(v) + cg_damping * v

    # F s comes from the conjugate-gradient products (s is their combination): no eleventh Fisher product.
    direction, f_direction = conjugate_gradient(damped_fvp, -g, iters=cg_iters, return_product=True)
    shs = 0.5 * direction @ f_direction
    scale = torch.sqrt(max_kl / shs.clamp(min=1e-12))  # largest step with 0.5 s^T F s = max_kl
    full_step = unflatten_like((direction * scale).detach(), params)
    old = {k: p.detach() for k, p in params.items()}
    del fvp, local_fvp

    def evaluate(candidate: Params) -> tuple[float, float]:
        # Loss and KL are means over tasks: summed chunk by chunk to bound memory. The inner step differentiates
        # the inner loss even here, so autograd stays on (first-order suffices).
        loss_c = kl_c = 0.0
        with torch.enable_grad():
            cand = {k: v.detach().requires_grad_(k in keys) for k, v in candidate.items()}
            for _, chunk, share in task_chunks(meta, task_chunk):
                loss_k, kl_k = meta_objective(policy, cand, chunk, keys, lrs, first_order, create_graph=False,
                                              estimator=estimator)
                loss_c += float(loss_k.detach()) * share
                kl_c += float(kl_k.detach()) * share
        both = reduce(torch.tensor([loss_c, kl_c], dtype=torch.float64))
        return float(both[0]), float(both[1])

    # The surrogate at the old parameters is the gradient pass's; the KL of a policy to itself is 0.
    new_params, info = line_search(old, full_step, evaluate, max_kl=max_kl, max_steps=ls_max_steps,
                                   backtrack_ratio=ls_backtrack_ratio, start=(float(loss), 0.0))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(new_params[name])
    return {"surrogate_before": float(loss), "surrogate_after": info["loss_after"], "kl": info["kl"],
            "line_search_steps": info["steps"], "step_accepted": float(info["accepted"]),
            "grad_norm": float(g.norm()), "step_fraction": info["step_fraction"], **extra}
