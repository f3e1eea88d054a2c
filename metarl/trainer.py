"""The Python API the CLI wraps: build a meta-trainer from a Config, run iterations, evaluate on held-out tasks.

One meta-iteration (Finn et al. 2017, alg. 3): sample a meta-batch of tasks; for each inner step, collect episodes
with the current per-task parameters, fit the baseline and adapt; collect post-adaptation episodes; update the
meta-parameters through the adaptation (`outer`: TRPO, or ProMP's loop, metarl.algorithm.promp). Every iteration returns a
flat dict of metrics; nothing is logged here.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Iterator

import numpy as np
import torch

from metarl.algorithm.advantages import fitted_advantages
from metarl.algorithm.inner_optimizers import attach, metric_names, rule_metrics
from metarl.algorithm.metalearner import Batch, MetaBatch, adapted_values, chunked_forward, trpo_step
from metarl.algorithm.optim import backtracking_line_search
from metarl.algorithm.policy import GaussianMLP, Params, adapted_keys, forward, log_prob, meta_params, sample_actions
from metarl.algorithm.promp import make_optimizer, promp_step, scheduled_lr
from metarl.common.allocator import keep_freed_memory
from metarl.common.threads import UpdateThreads
from metarl.config import Config, ConfigError, env_kwargs
from metarl.distributed import World, problem, traffic
from metarl.envs import get_family, make, resolve_horizon
from metarl.sampling.sampler import Episodes, Sampler

# Every scalar `Trainer.step` returns (TensorBoard tag and metrics.jsonl key) with its meaning; docs/ generate the
# tag table from this, and a test checks it against what step() really returns.
METRICS = {
    "returns/pre_adaptation": "mean episode return of the meta-batch's tasks with the meta-parameters (before the "
                              "inner step)",
    "returns/post_adaptation": "the same after `inner_steps` inner steps: what meta-training maximises",
    "success/pre_adaptation": "families that report success (Meta-World): the fraction of the meta-batch's episodes "
                              "that succeeded at any step, before the inner step",
    "success/post_adaptation": "the same after `inner_steps` inner steps",
    "trpo/surrogate_before": "TRPO surrogate loss (minus importance-weighted advantage) before the update",
    "trpo/surrogate_after": "the surrogate loss after the update (of the accepted step, else the same as before)",
    "trpo/kl": "mean KL between the post-adaptation policies before and after the update (bounded by `max_kl`)",
    "trpo/line_search_steps": "backtracking steps tried (1: the full step was taken)",
    "trpo/step_accepted": "1 if a step was accepted, 0 if the parameters were restored",
    "trpo/grad_norm": "norm of the meta-gradient (through the inner step)",
    "trpo/step_fraction": "fraction of the full natural-gradient step taken (0 when rejected)",
    "trpo/estimator_term_share": "with `estimator` lvc or dice (second order): |g - g_reinforce| / |g|, the share "
                                 "of the meta-gradient that the estimator's extra curvature term makes",
    "promp/surrogate_before": "ProMP (`outer: promp`): clipped surrogate loss at the first optimiser step",
    "promp/surrogate_after": "the clipped surrogate after the last optimiser step",
    "promp/loss_before": "ProMP's whole objective (surrogate + inner-KL penalty) at the first step",
    "promp/loss_after": "the same after the last step",
    "promp/kl": "mean KL between the post-adaptation policies before and after the update",
    "promp/inner_kl": "mean KL between each inner batch's sampling policy and the updated one (what is penalised)",
    "promp/clip_fraction": "fraction of post-adaptation steps whose likelihood ratio left [1 - clip, 1 + clip] "
                           "after the last step",
    "promp/update_kept": "the fraction of the iteration's update kept (1 unless it crossed promp_max_kl and was "
                         "shrunk)",
    "promp/lr": "the optimiser's step size this iteration (promp_lr, scheduled by promp_lr_schedule)",
    "promp/grad_norm": "norm of the objective's gradient at the last optimiser step",
    "meta-sgd/PARAM/step_size_mean": "`inner_optimizer: meta-sgd`: mean of the adapted parameter PARAM's learned step "
                                     "sizes (inner_lr x its factor; also _min and _max)",
    "meta-sgd/PARAM/step_size_min": "the smallest of them",
    "meta-sgd/PARAM/step_size_max": "the largest of them",
    "kfo/PARAM/left_distance": "`inner_optimizer: kfo`: ||L - I||_F / ||I||_F of weight PARAM's left factor (as "
                               "applied: L^T L with kfo_psd)",
    "kfo/PARAM/right_distance": "the same for its right factor R",
    "kfo/PARAM/left_condition": "condition number of the left factor",
    "kfo/PARAM/right_condition": "condition number of the right factor",
    "kfo/PARAM/scale_distance": "RMS distance from 1 of a vector parameter's (bias, log_std) elementwise factor",
    "dist/collectives": "with several ranks (torchrun, metarl.distributed): all-reduces this iteration (the "
                        "sampler's stop decisions, the update's sums)",
    "dist/bytes": "with several ranks: the bytes those all-reduces carried from this rank",
    "time/sampling_s": "wall time spent sampling episodes (all inner steps and the post-adaptation batch)",
    "time/sampling_policy_s": "the part of sampling spent in the policy (actions for every step)",
    "time/sampling_env_s": "the part of sampling spent stepping the simulator",
    "time/adaptation_s": "wall time of the baselines, advantages and inner steps",
    "time/update_s": "wall time of the meta-update (the outer loop)",
    "time/iteration_s": "wall time of the whole meta-iteration",
    "time/env_steps_per_s": "sampler throughput (env steps per second of sampling)",
    "threads/update": "torch threads the inner loop and update ran on: `update_threads`, fewer while other processes "
                      "kept a core busy (`adaptive_update_threads`)",
}


def logged_metrics(cfg: Config) -> dict:
    """The METRICS a run with `cfg` writes in one process: its outer loop's, the estimator's diagnostic where it has
    one, and its learned inner rule's, one per adapted parameter (PARAM); several ranks add the dist/ keys."""
    other = "promp/" if cfg.outer == "trpo" else "trpo/"
    keep = {k: v for k, v in METRICS.items() if not k.startswith(other)}
    if not reports_success(cfg.env):
        keep = {k: v for k, v in keep.items() if not k.startswith("success/")}
    if cfg.estimator == "reinforce" or cfg.first_order:
        keep.pop("trpo/estimator_term_share", None)
    keep = {k: v for k, v in keep.items() if "/PARAM/" not in k and not k.startswith("dist/")}
    shapes_of = GaussianMLP(1, 1, cfg.hidden_sizes)  # only the parameters' ranks matter
    keys = adapted_keys(shapes_of, cfg.algo)
    shapes = {k: tuple(shapes_of.get_parameter(k).shape) for k in keys}
    return {**keep, **metric_names(cfg.inner_optimizer, keys, shapes)}


EVAL_METRICS = {
    "eval/return_step_K": "mean return on held-out tasks after K adaptation steps (every `eval_every` iterations); "
                          "K = 0 is the no-inner-loop return (the RL analogue of the ANIL paper's NIL)",
    "eval/return_step_K_std": "its standard deviation over the held-out tasks",
    "eval/success_step_K": "families that report success (Meta-World): the fraction of held-out episodes that "
                           "succeeded at any step, after K adaptation steps (mean over tasks of each task's rate)",
}


def reports_success(env: str) -> bool:
    """Whether the task family `env` reports success in its step's info (Meta-World: `info["success"]`)."""
    return bool(getattr(get_family(env).env_cls, "reports_success", False))


def evaluation_metrics(cfg: Config) -> dict:
    """The EVAL_METRICS an evaluation of a run with `cfg` writes (the success rate only for families reporting it)."""
    return {k: v for k, v in EVAL_METRICS.items() if reports_success(cfg.env) or "success" not in k}


@dataclasses.dataclass
class AdaptedStep:
    """One step of a held-out adaptation (Trainer.adaptation_trace): the policies after `step` inner steps (adapted
    keys with a leading task axis) and the episodes they acted on `tasks`."""

    step: int
    tasks: list
    params: Params
    episodes: Episodes


def resolve_device(name: str) -> torch.device:
    """The torch device of the `device` setting: 'auto' is cuda when torch sees a GPU, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' needs a CUDA GPU, and torch sees none here (torch "
                         f"{torch.__version__}); use device: cpu or auto (for a saved run: --set device=cpu)")
    return torch.device(name)


@functools.cache
def _cpu_has_bfloat16_units() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles, as torch's CPU build detects them)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_fvp_precision(name: str, device: torch.device) -> str:
    """The `fvp_precision` setting as run on `device`: 'auto' is bfloat16 where the device has bfloat16 units (where
    it does not, bfloat16 products are emulated and slower than float32's), else float32."""
    if name != "auto":
        return name
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else _cpu_has_bfloat16_units()
    return "bfloat16" if native else "float32"


class Trainer:
    """Meta-trains a Gaussian MLP policy with MAML or ANIL on one task family."""

    def __init__(self, cfg: Config, world: World | None = None):
        self.cfg = cfg
        # With several ranks (metarl.distributed) this trainer samples, adapts and differentiates its share of the
        # meta-batch's tasks; the update's sums are all-reduced, so every rank holds the same policy.
        self.world = world or World()
        if problem(self.world, cfg):
            raise ValueError(problem(self.world, cfg))
        self.local = self.world.tasks(cfg.meta_batch_size)
        if cfg.tune_allocator:
            keep_freed_memory()  # before the first big allocation (metarl.common.allocator)
        family = get_family(cfg.env)
        self.horizon = resolve_horizon(family, cfg.horizon)
        self.env_kwargs = env_kwargs(cfg)
        self._samplers: dict[tuple[int, int], Sampler] = {}
        self.device = resolve_device(cfg.device)
        if cfg.physics == "mjx":
            from metarl.envs.mjx import problem as physics_problem
            reason = physics_problem(cfg.env, cfg.physics_impl, cfg.forward_velocity, self.device.type)
            if reason:
                raise ValueError(reason)
        self.dtype = getattr(torch, cfg.dtype)  # of the policy, the episodes and the update
        # the training batches' sampler: this rank's tasks
        self.sampler = self._sampler(self.local.stop - self.local.start, cfg.episodes_per_task)
        self._task_env = make(cfg.env, **self.env_kwargs).unwrapped  # only to sample tasks
        # Independent streams for tasks/env seeds, action noise and initialisation, all from cfg.seed.
        tasks_seq, noise_seq, init_seq = np.random.SeedSequence(cfg.seed).spawn(3)
        self.rng = np.random.default_rng(tasks_seq)
        self.noise = torch.Generator().manual_seed(int(noise_seq.generate_state(1)[0]))
        init = torch.Generator().manual_seed(int(init_seq.generate_state(1)[0]))
        # Initialised on the CPU from its own stream (the same policy on every device), then moved.
        self.policy = GaussianMLP(self.sampler.obs_dim, self.sampler.act_dim, cfg.hidden_sizes, cfg.init_log_std,
                                  generator=init).to(self.device, self.dtype)
        self.keys = adapted_keys(self.policy, cfg.algo)
        # A learned inner rule's factors join the policy's parameters (metarl.algorithm.inner_optimizers): meta-parameters.
        attach(self.policy, self.keys, cfg.inner_optimizer, cfg.kfo_psd)
        # The update's threads: update_threads, fewer while other processes keep a core busy (metarl.common.threads).
        self.thread_budget = UpdateThreads(cfg.update_threads, cfg.adaptive_update_threads)
        self._threads = cfg.update_threads
        self.iteration = 0
        self.env_steps = 0
        # The line search trpo_step uses; a study may wrap it to probe the step (benchmarks/studies/trpo_step_kl.py).
        self.line_search = backtracking_line_search
        # ProMP's optimiser (its moments carry over between iterations, so they are checkpointed)
        self.outer_optimizer = (make_optimizer(self.policy, cfg.promp_optimizer, cfg.promp_lr)
                                if cfg.outer == "promp" else None)

    # -- the public seams: what a study or a command needs from a trainer ------------------------------------
    def meta_parameters(self) -> Params:
        """The policy's current meta-parameters as a detached parameter dict (the inner loop's starting point)."""
        return {k: v.detach() for k, v in meta_params(self.policy).items()}

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list:
        """`n` tasks of the run's family drawn with `rng` alone. `split` 'test': the family's held-out tasks where it
        has a split of its own (`sample_test_tasks`: Meta-World's test goals and types), else its one distribution
        (held out by drawing from `eval_seed`, a stream training never uses)."""
        if split not in ("train", "test"):
            raise ValueError(f"split {split!r} is not one of train, test")
        if split == "test" and callable(getattr(self._task_env, "sample_test_tasks", None)):
            return self._task_env.sample_test_tasks(rng, n)
        return self._task_env.sample_tasks(rng, n)

    def collect(self, params: Params, tasks: list, seed: int, noise: torch.Generator | None = None,
                episodes_per_task: int | None = None, rows: tuple[slice, int] | None = None,
                together: bool = False) -> tuple[Episodes, dict]:
        """Episodes of `tasks` acted by the policy with `params` (shared or per-task), env copies seeded from `seed`.

        `noise` draws the action noise (default: the training stream); `episodes_per_task` defaults to the config's.
        `rows` = (these tasks, all tasks) when `tasks` are one rank's share: the noise of all is drawn, these rows
        kept; `together`: the batch's length is every rank's longest (metarl.distributed).
        Returns the episodes and the sampler's timings ({"policy_s", "env_s", "env_steps"}).
        """
        sampler = self._sampler(len(tasks), episodes_per_task or self.cfg.episodes_per_task)
        # Explicit thread counts: while the simulator's threads hold the cores, torch gets `torch_threads`
        # (more would oversubscribe a 2-core machine and slow small ops 10-20x); the update gets `update_threads`.
        torch.set_num_threads(self.cfg.torch_threads)
        try:
            act = self._actor(params, self.noise if noise is None else noise, rows, sampler.device)
            return sampler.sample(act, tasks, seed, self.world.max if together else None)
        finally:
            torch.set_num_threads(self._threads)

    def batch(self, episodes: Episodes) -> Batch:
        """Episodes with their advantages (linear feature baseline, GAE), as the inner step and TRPO use them."""
        cfg = self.cfg
        adv = fitted_advantages(episodes.observations, episodes.rewards, episodes.mask, cfg.gamma, cfg.gae_lambda,
                                reg=cfg.baseline_reg, normalize_advantages=cfg.normalize_advantages)
        return Batch(episodes.to(self.device), adv.to(self.device))

    def adapt(self, params: Params, batch: Batch, lr: float, keys: list[str] | None = None) -> Params:
        """One inner step of size `lr` per task on `keys` (default: the algorithm's adapted keys); no graph kept."""
        return adapted_values(self.policy, params, [batch], self.keys if keys is None else keys, [lr],
                              self.cfg.estimator, task_chunk=self.cfg.task_chunk)

    def reseed(self, seed: int) -> None:
        """Restart the task/env-seed and action-noise streams from `seed` (to replay one chosen meta-batch)."""
        self.rng = np.random.default_rng(seed)
        self.noise = torch.Generator().manual_seed(seed)

    def _sampler(self, num_tasks: int, episodes_per_task: int) -> Sampler:
        key = (num_tasks, episodes_per_task)
        if key not in self._samplers:
            self._samplers[key] = Sampler(self.cfg.env, num_tasks, episodes_per_task, self.horizon,
                                          self.cfg.sampler_threads, self.env_kwargs, self.dtype,
                                          physics=self.cfg.physics, physics_impl=self.cfg.physics_impl,
                                          device=self.device)
        return self._samplers[key]

    def _actor(self, params: Params, generator: torch.Generator, rows: tuple[slice, int] | None = None,
               where: torch.device = torch.device("cpu")):
        def act(obs: torch.Tensor) -> torch.Tensor:
            # The noise is drawn on the CPU, so every device acts alike. With the C simulator the actions are
            # formed on the CPU (one transfer each way per env step, none on a CPU); with a device simulator
            # (physics: mjx) on the policy's device, the noise its only transfer.
            mean, log_std = forward(self.policy, params, obs.to(self.device))
            if where.type == "cpu":
                mean, log_std = mean.cpu(), log_std.cpu()
            return sample_actions(mean, log_std, generator, rows)
        return act

    # -- one meta-iteration ----------------------------------------------------------------------------------
    def step(self) -> dict:
        """Run one meta-iteration (sample_meta_batch, then update); return its metrics."""
        start = time.perf_counter()
        sent = traffic()
        self._threads = self.thread_budget.now()  # for this iteration's inner loop and update
        meta, timing = self.sample_meta_batch()
        t2 = time.perf_counter()
        update = self.update(meta)
        update_s = time.perf_counter() - t2
        self.iteration += 1
        # every rank's env steps (a sum: share 1 each)
        self.env_steps += int(self.world.mean(torch.tensor(float(timing["env_steps"]), dtype=torch.float64), 1.0))
        total = time.perf_counter() - start
        pre, post = meta.inner[0].episodes, meta.post.episodes
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "returns/pre_adaptation": float(self._mean(pre.episode_returns().mean())),
            "returns/post_adaptation": float(self._mean(post.episode_returns().mean())),
            **({"success/pre_adaptation": float(self._mean(pre.successes.mean())),
                "success/post_adaptation": float(self._mean(post.successes.mean()))}
               if post.successes is not None else {}),
            **{f"{self.cfg.outer}/{k}": v for k, v in update.items()},
            **rule_metrics(self.policy, self.cfg.inner_lr),
            "time/sampling_s": timing["sampling_s"],
            "time/sampling_policy_s": timing["policy_s"],
            "time/sampling_env_s": timing["env_s"],
            "time/adaptation_s": timing["adaptation_s"],
            "time/update_s": update_s,
            "time/iteration_s": total,
            "time/env_steps_per_s": timing["env_steps"] / max(timing["sampling_s"], 1e-9),
            "threads/update": self._threads,
            **({"dist/collectives": traffic()["collectives"] - sent["collectives"],
                "dist/bytes": traffic()["bytes"] - sent["bytes"]} if self.world.size > 1 else {}),
        }

    def sample_meta_batch(self) -> tuple[MetaBatch, dict]:
        """One meta-iteration's data: tasks from the training stream, `inner_steps` adapted batches and the
        post-adaptation batch with its sampling policy. Returns it with timings ({"sampling_s", "policy_s",
        "env_s", "adaptation_s", "env_steps"}). What `update` (or a benchmark of it) takes."""
        cfg = self.cfg
        tasks = self.sample_tasks(cfg.meta_batch_size, self.rng)[self.local]  # this rank's share (all when alone)
        rows = (self.local, cfg.meta_batch_size)
        params = self.meta_parameters()
        inner, timing = [], dict.fromkeys(("sampling_s", "policy_s", "env_s", "adaptation_s"), 0.0)
        timing["env_steps"] = 0
        for _ in range(cfg.inner_steps + 1):
            t0 = time.perf_counter()
            seed = self._env_seed() + self.local.start * cfg.episodes_per_task  # its env copies' global seeds
            episodes, sampled = self.collect(params, tasks, seed, rows=rows, together=self.world.size > 1)
            t1 = time.perf_counter()
            batch = self.batch(episodes)
            timing["sampling_s"] += t1 - t0
            timing["policy_s"] += sampled["policy_s"]
            timing["env_s"] += sampled["env_s"]
            timing["env_steps"] += sampled["env_steps"]
            if len(inner) == cfg.inner_steps:
                post = batch
                timing["adaptation_s"] += time.perf_counter() - t1
                break
            inner.append(batch)
            params = self.adapt(params, batch, cfg.inner_lr)
            timing["adaptation_s"] += time.perf_counter() - t1
        with torch.no_grad():
            mean, log_std = chunked_forward(self.policy, params, post.episodes.observations, cfg.task_chunk)
            old_log_prob = log_prob(mean, log_std, post.episodes.actions)
        return MetaBatch(inner, post, mean, log_std, old_log_prob), timing

    def update(self, meta: MetaBatch) -> dict:
        """The meta-update (`outer`: TRPO or ProMP) of the policy on `meta`, in place; its metrics (the trpo/ or
        promp/ keys, unprefixed)."""
        cfg = self.cfg
        torch.set_num_threads(self._threads)
        lrs = [cfg.inner_lr] * cfg.inner_steps
        if cfg.outer == "promp":
            lr = scheduled_lr(cfg.promp_lr, cfg.promp_lr_schedule, self.iteration, cfg.iterations)
            for group in self.outer_optimizer.param_groups:
                group["lr"] = lr
            out = promp_step(self.policy, meta, self.keys, lrs, self.outer_optimizer, first_order=cfg.first_order,
                             estimator=cfg.estimator, clip=cfg.promp_clip, steps=cfg.promp_steps,
                             kl_coef=cfg.promp_kl_coef, task_chunk=cfg.task_chunk, reduce=self._mean,
                             max_kl=cfg.promp_max_kl)
            return {**out, "lr": lr}
        return trpo_step(self.policy, meta, self.keys, lrs,
                         first_order=cfg.first_order, max_kl=cfg.max_kl, cg_iters=cfg.cg_iters,
                         cg_damping=cfg.cg_damping, ls_max_steps=cfg.ls_max_steps,
                         ls_backtrack_ratio=cfg.ls_backtrack_ratio, fvp_subsample=cfg.fvp_subsample,
                         task_chunk=cfg.task_chunk, line_search=self.line_search,
                         fvp_precision=resolve_fvp_precision(cfg.fvp_precision, self.device),
                         estimator=cfg.estimator, reduce=self._mean)

    def _mean(self, value: torch.Tensor) -> torch.Tensor:
        """The meta-batch's mean of a quantity whose mean over this rank's tasks is `value`."""
        return self.world.mean(value, (self.local.stop - self.local.start) / self.cfg.meta_batch_size)

    def _env_seed(self) -> int:
        # the whole meta-batch's env copies, whatever this rank's share
        return int(self.rng.integers(0, 2**31 - 1 - self.cfg.meta_batch_size * self.cfg.episodes_per_task))

    # -- held-out evaluation ---------------------------------------------------------------------------------
    def adaptation_trace(self, num_tasks: int | None = None, steps: int | None = None,
                         episodes_per_task: int | None = None, keys: list[str] | None = None,
                         lrs: list[float] | None = None, split: str = "test") -> Iterator[AdaptedStep]:
        """The held-out evaluation step by step: for step 0..steps, the per-task parameters and the episodes they
        acted, then one adaptation step on those episodes (what `evaluate` averages and `metarl analyze` inspects).

        Test tasks, env seeds and action noise come from `eval_seed` alone, so the trace is the same for every
        checkpoint and never disturbs the training streams. Step sizes: `lrs[i]` for step i, by default
        eval_first_lr then eval_later_lr (MAML); `keys`: the adapted parameters, by default the algorithm's.
        `split`: 'test', the family's held-out tasks; 'train', its training tasks (Meta-World's meta-train success).
        """
        cfg = self.cfg
        num_tasks = num_tasks or cfg.eval_tasks
        steps = cfg.eval_steps if steps is None else steps
        episodes_per_task = episodes_per_task or cfg.eval_episodes_per_task
        if lrs is None:
            lrs = [cfg.eval_first_lr] + [cfg.eval_later_lr] * max(steps - 1, 0)
        if len(lrs) < steps:
            raise ValueError(f"evaluate: {steps} adaptation steps need {steps} step sizes, got lrs={lrs!r}")
        rng = np.random.default_rng(cfg.eval_seed)
        tasks = self.sample_tasks(num_tasks, rng, split)
        noise = torch.Generator().manual_seed(cfg.eval_seed)
        num_envs = self._sampler(num_tasks, episodes_per_task).env.num_envs
        params = self.meta_parameters()
        for step in range(steps + 1):
            seed = int(rng.integers(0, 2**31 - 1 - num_envs))
            episodes, _ = self.collect(params, tasks, seed, noise, episodes_per_task)
            yield AdaptedStep(step, tasks, params, episodes)
            if step < steps:
                params = self.adapt(params, self.batch(episodes), lrs[step], keys)

    def evaluate(self, num_tasks: int | None = None, steps: int | None = None,
                 episodes_per_task: int | None = None, per_task: bool = False, keys: list[str] | None = None,
                 lrs: list[float] | None = None, progress: Callable[[int, float], None] | None = None,
                 split: str = "test") -> dict:
        """Return after 0..steps adaptation steps on held-out tasks, mean and std over tasks; for a family that
        reports success (Meta-World), also `success_step_K`: the mean over tasks of each task's success rate.

        The protocol is `adaptation_trace`'s (its arguments have the same meaning): a MAML-trained policy evaluated
        ANIL-style passes the head's `keys`. The 0-step return is the no-inner-loop analogue of the ANIL paper's
        NIL. With `per_task`, the result also holds "per_task": each task's fields and its mean return after each
        step (a mean hides which tasks fail). `progress(step, mean return)` is called as each step's episodes are
        in (a long evaluation shows where it is). `split`: as `adaptation_trace`'s.
        """
        result, by_step, success_by_step, tasks = {}, [], [], []
        for item in self.adaptation_trace(num_tasks, steps, episodes_per_task, keys, lrs, split):
            returns = item.episodes.episode_returns().mean(1)  # [tasks]
            by_step.append(returns.tolist())
            result[f"return_step_{item.step}"] = float(returns.mean())
            result[f"return_step_{item.step}_std"] = float(returns.std(unbiased=False))
            if item.episodes.successes is not None:
                rates = item.episodes.successes.mean(1)  # [tasks]
                success_by_step.append(rates.tolist())
                result[f"success_step_{item.step}"] = float(rates.mean())
            tasks = item.tasks
            if progress is not None:
                progress(item.step, result[f"return_step_{item.step}"])
        if per_task:
            result["per_task"] = [{"task": _jsonable(dataclasses.asdict(task)),
                                   "returns": [step_returns[i] for step_returns in by_step],
                                   **({"success": [rates[i] for rates in success_by_step]} if success_by_step else {})}
                                  for i, task in enumerate(tasks)]
        return result

    # -- state for checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this trainer is."""
        state = {"policy": self.policy.state_dict(), "rng": self.rng.bit_generator.state,
                 "noise": self.noise.get_state(), "iteration": self.iteration, "env_steps": self.env_steps}
        if self.outer_optimizer is not None:
            state["outer_optimizer"] = self.outer_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.rng.bit_generator.state = state["rng"]
        self.noise.set_state(state["noise"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        if self.outer_optimizer is not None and "outer_optimizer" in state:
            self.outer_optimizer.load_state_dict(state["outer_optimizer"])

    def close(self) -> None:
        for sampler in self._samplers.values():
            sampler.close()


def _jsonable(value):
    """A task's fields as JSON values: numpy scalars and arrays become numbers and lists, the unknown a string."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)):
        return value.item() if isinstance(value, np.number) else value
    return value if isinstance(value, str) or value is None else repr(value)
