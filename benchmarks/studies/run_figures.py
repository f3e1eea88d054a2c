"""Print the figures the README quotes from a finished (or in-progress) run directory, so each is one command.

For every RUN_DIR (a metarl run directory or a published copy under benchmarks/results/grid/runs/):

- held-out return after each adaptation step, by evaluation iteration (`eval/return_step_*` in metrics.jsonl);
- training curves: the mean of `returns/post_adaptation` and `trpo/grad_norm` over the first and last WINDOW
  iterations, and the best WINDOW-iteration block of the training return;
- TRPO: steps accepted, line-search trials per step (1: the full step), mean KL of the step taken;
- seconds per iteration by sitting (`time/iteration_s`, split where timing.json says each sitting resumed);
- per task, grouped by task when held-out tasks repeat (cheetah-dir's two directions): mean, population std,
  minimum and how many end below zero after each step (`per_task` in eval.json, written by `metarl eval`).

    python benchmarks/studies/run_figures.py benchmarks/results/grid/runs/cheetah-dir-*-seed0 --window 10 25
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from metarl import runs as run
from metarl.runs import EVAL_FILE, METRICS_FILE

TIMING_FILE = "timing.json"  # per-sitting timing, written by metarl.experiments.sweep


def read_metrics(run_dir: Path) -> list[dict]:
    """One dict per logged iteration, in file order (metarl.runs' reader)."""
    metrics = run.read_metrics(run_dir)  # metrics.jsonl, or a published run's metrics.jsonl.gz
    if not metrics:
        raise SystemExit(f"run_figures: no {METRICS_FILE} (nor {run.METRICS_ARCHIVE}) in {run_dir}")
    return metrics


def held_out_by_iteration(metrics: list[dict]) -> list[tuple[int, list[float]]]:
    """(iteration, [return after 0, 1, ... steps]) for every iteration that ran a held-out evaluation."""
    rows = []
    for record in metrics:
        steps = sorted(int(k.rsplit("_", 1)[1]) for k in record
                       if k.startswith("eval/return_step_") and not k.endswith("_std"))
        if steps:
            rows.append((record["iteration"], [record[f"eval/return_step_{s}"] for s in steps]))
    return rows


def window_means(metrics: list[dict], field: str, window: int) -> dict:
    """Mean of FIELD over the first and last WINDOW iterations, and the best block of WINDOW consecutive ones."""
    values = np.array([m[field] for m in metrics if field in m], dtype=float)
    iterations = [m["iteration"] for m in metrics if field in m]
    if len(values) < window:
        return {}
    blocks = np.convolve(values, np.ones(window) / window, mode="valid")  # blocks[i] = mean of values[i:i+window]
    best = int(np.argmax(blocks))
    return {"first": values[:window].mean(), "last": values[-window:].mean(), "best": blocks[best],
            "best_from": iterations[best], "best_to": iterations[best + window - 1]}


def trpo_summary(metrics: list[dict]) -> str:
    """How often TRPO's step was accepted, how many line-search trials it took, and the mean KL it ended at."""
    steps = [m for m in metrics if "trpo/line_search_steps" in m]
    if not steps:
        return "no TRPO steps logged"
    trials = Counter(int(m["trpo/line_search_steps"]) for m in steps)
    accepted = sum(m["trpo/step_accepted"] for m in steps)
    return (f"TRPO: {accepted:.0f} of {len(steps)} steps accepted; line-search trials "
            + ", ".join(f"{k}: {trials[k]}" for k in sorted(trials))
            + f"; mean KL {np.mean([m['trpo/kl'] for m in steps]):.4f}")


def seconds_by_sitting(metrics: list[dict], timing: dict) -> list[tuple[int, int, float]]:
    """(first iteration, last iteration, mean s/iteration) per sitting.

    A sitting's end is taken from where the next one resumed, not from its own `to_iteration`, which runs killed
    before the heartbeat existed record as 0.
    """
    starts = [s["from_iteration"] for s in timing.get("sittings", [])]
    last = metrics[-1]["iteration"] if metrics else 0
    rows = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else last
        times = [m["time/iteration_s"] for m in metrics
                 if start < m["iteration"] <= end and "time/iteration_s" in m]
        if times:
            rows.append((start + 1, end, float(np.mean(times))))
    return rows


def per_task_groups(evaluation: dict) -> list[tuple[str, np.ndarray]]:
    """(label, returns[task, step]) per distinct held-out task when tasks repeat, else one group of all tasks."""
    per_task = evaluation.get("per_task", [])
    if not per_task:
        return []
    keys = [json.dumps(t["task"], sort_keys=True) for t in per_task]
    if len(set(keys)) == len(keys):
        return [("all tasks", np.array([t["returns"] for t in per_task]))]
    return [(key, np.array([t["returns"] for t, k in zip(per_task, keys) if k == key])) for key in sorted(set(keys))]


def report(run_dir: Path, windows: list[int]) -> str:
    metrics = read_metrics(run_dir)
    timing_path, eval_path = run_dir / TIMING_FILE, run_dir / EVAL_FILE
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    evaluation = json.loads(eval_path.read_text()) if eval_path.is_file() else {}
    trained = sorted({m["iteration"] for m in metrics if "returns/post_adaptation" in m})
    lines = [f"## {run_dir.name}", "",
             f"{len(trained)} training iterations logged, last {trained[-1]}" if trained else "no iterations logged",
             ""]

    held_out = held_out_by_iteration(metrics)
    if held_out:
        lines += ["held-out return by evaluation iteration (after 0, 1, ... steps):"]
        lines += [f"  {it:4d}: " + "  ".join(f"{r:8.1f}" for r in returns) for it, returns in held_out]
        lines.append("")

    for field in ("returns/post_adaptation", "trpo/grad_norm"):
        for window in windows:
            w = window_means(metrics, field, window)
            if w:
                lines.append(f"{field}, {window}-iteration windows: first {w['first']:.2f}, last {w['last']:.2f}, "
                             f"best {w['best']:.2f} (iterations {w['best_from']}-{w['best_to']})")
    lines += [trpo_summary(metrics), ""]

    for first, last, seconds in seconds_by_sitting(metrics, timing):
        lines.append(f"sitting, iterations {first}-{last}: {seconds:.1f} s/iteration")
    if "wall_s" in timing:  # what reproduce.py's aggregate reports as the run's wall-clock time
        lines.append(f"wall-clock time in all: {timing['wall_s'] / 3600:.2f} h")
    lines.append("")

    for label, returns in per_task_groups(evaluation):
        lines.append(f"per task, {label} ({len(returns)} tasks), after 0, 1, ... steps:")
        lines.append("  mean  " + "  ".join(f"{v:8.1f}" for v in returns.mean(0)))
        lines.append("  std   " + "  ".join(f"{v:8.1f}" for v in returns.std(0)))
        lines.append("  min   " + "  ".join(f"{v:8.1f}" for v in returns.min(0)))
        lines.append("  < 0   " + "  ".join(f"{v:8d}" for v in (returns < 0).sum(0)))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--window", type=int, nargs="+", default=[10, 25],
                        help="iterations averaged at each end of the training curves (default: 10 25)")
    args = parser.parse_args(argv)
    bad = [w for w in args.window if w < 1]
    if bad:
        parser.error(f"--window must be positive, got {bad}")
    missing = [str(r) for r in args.runs if not r.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(missing)}")
    print("\n".join(report(run, args.window) for run in args.runs))


if __name__ == "__main__":
    main()
