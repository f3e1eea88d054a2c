"""Evaluating a saved run on held-out tasks (`metarl eval`): bounded, with progress, and said when the set-up
differs from the one that wrote the run."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from metarl.common.files import write_json
from metarl.config import Config
from metarl.envs import resolve_horizon
from metarl.runs.checkpoints import load_run, load_trainer, speed_settings
from metarl.runs.directory import writable_dir
from metarl.runs.layout import EVAL_FILE, SETUP_FILE, RunError

# -- evaluation of a saved run --------------------------------------------------------------------------------

@dataclass
class EvalReport:
    """What `metarl eval` prints and writes to eval.json."""

    data: dict

    def table(self) -> str:
        d, returns = self.data, self.data["returns"]
        success = "success_step_0" in returns  # families that report success (Meta-World)
        which = "training" if d.get("split") == "train" else "held-out"
        lines = [f"{d['env']} / {d['algo']} / seed {d['seed']}: checkpoint at iteration {d['iteration']} "
                 f"({d['env_steps']:,} env steps)",
                 f"{d['tasks']} {which} tasks x {d['episodes']} episodes, horizon {d['horizon']}",
                 "", f"{'steps':>5}  {'mean return':>12}  {'std over tasks':>14}" + ("  success" * success)]
        for step in range(d["steps"] + 1):
            lines.append(f"{step:>5}  {returns[f'return_step_{step}']:>12.2f}  "
                         f"{returns[f'return_step_{step}_std']:>14.2f}"
                         + (f"  {returns[f'success_step_{step}']:>7.1%}" if success else ""))
        return "\n".join(lines)


def default_eval_path(run_dir: Path, checkpoint: str | os.PathLike | None = None, split: str = "test") -> Path:
    """Where `metarl eval` writes by default: RUN_DIR/eval.json, or CHECKPOINT.eval.json for a kept snapshot (so
    evaluating a snapshot never replaces the run's own report); eval-train.json (.eval-train.json) for the
    training tasks."""
    name = EVAL_FILE if split == "test" else EVAL_FILE.replace(".json", "-train.json")
    return run_dir / name if checkpoint is None else Path(checkpoint).with_suffix("." + name)


# What one evaluation may ask: far beyond any protocol (3 steps, 40 tasks x 20 episodes), below hours of work
MAX_EVAL_STEPS = 100
MAX_EVAL_ENV_STEPS = 10**9


def recorded_setup(run_dir: Path, eval_file: Path | None = None) -> dict | None:
    """The set-up that wrote the run's checkpoint: its last sitting's (setup.json), else that of an earlier
    evaluation (`eval_file`'s), else None (a run from before set-ups were recorded)."""
    for path, read in ((run_dir / SETUP_FILE, lambda d: d["sittings"][-1]), (eval_file, lambda d: d["setup"])):
        if path is not None and Path(path).is_file():
            try:
                return read(json.loads(Path(path).read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError, IndexError):
                continue
    return None


def check_evaluation_size(cfg: Config, tasks: int, steps: int, episodes: int) -> None:
    """Refuse an evaluation no one means (a typo's 99999999 steps) with a one-line RunError naming what is allowed."""
    if steps > MAX_EVAL_STEPS:
        raise RunError(f"--steps {steps} is more adaptation steps than an evaluation takes; allowed: 0 to "
                       f"{MAX_EVAL_STEPS} (the protocol's is {cfg.eval_steps})")
    work = tasks * episodes * (steps + 1) * resolve_horizon(cfg.env, cfg.horizon)
    if work > MAX_EVAL_ENV_STEPS:
        raise RunError(f"an evaluation of {tasks} tasks x {episodes} episodes x {steps + 1} step(s) is {work:,} env "
                       f"steps, over the {MAX_EVAL_ENV_STEPS:,} allowed (hours of simulation); ask for fewer")


def evaluate_run(run_dir: str | os.PathLike, tasks: int | None = None, steps: int | None = None,
                 episodes: int | None = None, out: str | os.PathLike | None = None,
                 checkpoint: str | os.PathLike | None = None, speed: dict | None = None,
                 split: str = "test") -> EvalReport:
    """Evaluate a run's latest checkpoint (or `checkpoint`, a kept snapshot) on held-out tasks and write the report
    to `out` (default: RUN_DIR/eval.json, or beside `checkpoint` as its name with .eval.json). `speed`: settings of
    speed and disk use for this process (e.g. {"device": "cpu"} for a run trained on a GPU); config.yaml is unchanged.
    `split` 'train' evaluates on the family's training tasks instead (Meta-World's meta-train success; written to
    eval-train.json by default)."""
    if split not in ("train", "test"):
        raise RunError(f"--split {split!r} is not one of train, test")
    speed = speed_settings(speed, "for an evaluation")
    path, cfg, _ = load_run(run_dir, checkpoint)  # checked before anything is created
    out = Path(out) if out is not None else default_eval_path(path, checkpoint, split)
    # before evaluating, so a bad --out or a read-only run directory fails at once
    writable_dir(out.parent, "the evaluation report")
    tasks = tasks or cfg.eval_tasks
    steps = cfg.eval_steps if steps is None else steps
    episodes = episodes or cfg.eval_episodes_per_task
    check_evaluation_size(cfg, tasks, steps, episodes)
    from metarl.common import provenance

    here = provenance.setup()
    differ = provenance.differences(recorded_setup(path, out), here)
    if differ:  # MuJoCo and the BLAS kernels repeat bit for bit only on the same versions and vector features
        print(f"note: evaluating on another set-up than the one that wrote {path.name} ({'; '.join(differ)}): the "
              "returns may differ from its figures in the last digits", file=sys.stderr)
    trainer = load_trainer(path, checkpoint, speed)
    start = time.perf_counter()

    def progress(step: int, mean: float) -> None:  # one line per adaptation step, so a long evaluation shows
        print(f"eval: return after {step} of {steps} adaptation step{'s' * (steps != 1)}: {mean:.2f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    try:
        returns = trainer.evaluate(num_tasks=tasks, steps=steps, episodes_per_task=episodes, per_task=True,
                                   progress=progress, split=split)
        per_task = returns.pop("per_task")
    finally:
        trainer.close()
    report = EvalReport({"env": cfg.env, "algo": cfg.algo, "seed": cfg.seed, "iteration": trainer.iteration,
                         "env_steps": trainer.env_steps, "horizon": trainer.horizon, "tasks": tasks,
                         "steps": steps, "episodes": episodes, "eval_seed": cfg.eval_seed, "split": split,
                         "returns": returns,
                         "per_task": per_task, "setup": here})
    try:
        write_json(out, report.data)
    except OSError as exc:
        raise RunError(f"cannot write the evaluation report to {out}: {exc.strerror or exc}") from exc
    return report
