"""Rapid learning or feature reuse, for policies: the ANIL paper's instruments applied to a meta-trained run
(`metarl analyze`).

Raghu, Raghu, Bengio, Vinyals, "Rapid Learning or Feature Reuse?", ICLR 2020, sec. 3-4, ask whether MAML's inner
loop changes the network's features or only its head, with two instruments; here they run on the run's held-out
tasks with the evaluation's tasks, seeds and step sizes (Trainer.adaptation_trace), so their returns are the
evaluation's:
- representation similarity per layer: each hidden layer's activations and the head's output (the policy mean),
  under the meta-parameters against the policy after 1..K inner steps, on the same observations (those the
  meta-policy acted on, step 0's episodes): linear CKA and SVCCA (metarl.experiments.similarity), per task, then averaged;
- the change of each layer's parameters, ||theta'_l - theta_l|| / ||theta_l||, after 1..K steps;
- layer freezing at test time: the held-out returns when only a chosen set of layers adapts (`head`, the last
  hidden layer and the head, ..., `all`), whatever the run was trained with;
- along training: the similarity for each kept snapshot (`keep_checkpoint_every`) and the final checkpoint.
Writes analysis.json, analysis.md and three PNG figures (FIGURES) into the run directory or `out`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metarl import runs as run
from metarl.algorithm.policy import layer_outputs, layers
from metarl.common.files import write_json, write_text
from metarl.experiments.figures import save_figure
from metarl.experiments.similarity import linear_cka, svcca

ANALYSIS_FILE = "analysis.json"
MARKDOWN_FILE = "analysis.md"
FIGURES = {"similarity": "analysis_similarity.png", "training": "analysis_training.png",
           "freezing": "analysis_freezing.png"}
MEASURES = ("cka", "svcca")
MAX_ROWS = 2000  # observations per task the similarities are computed on (evenly thinned; 4,000 in the protocol)


class AnalysisError(run.RunError):
    """An expected problem with an analysis (a bad argument, matplotlib missing); printed as one line."""


def freezing_sets(policy) -> dict[str, list[str]]:
    """The adapted-parameter sets of the freezing test, smallest first: the head alone, then one more hidden layer
    below it at a time, then every parameter (the layers and log_std: what MAML adapts)."""
    by_layer = layers(policy)
    hidden = [name for name in by_layer if name.startswith("hidden")]
    sets = {"head": list(by_layer["head"])}
    for first in range(len(hidden), 0, -1):
        span = hidden[first - 1:]
        label = span[0] if len(span) == 1 else f"{span[0]}-{span[-1].split()[-1]}"
        sets[f"{label} + head"] = [k for name in span for k in by_layer[name]] + list(by_layer["head"])
    sets["all"] = [k for keys in by_layer.values() for k in keys]
    return sets


def _task_params(params: dict, task: int, base: dict) -> dict:
    """One task's parameter set: its slice of the per-task (adapted) tensors, the shared ones as they are."""
    return {k: (v[task] if v.dim() > base[k].dim() else v) for k, v in params.items()}


def _rows(observations: torch.Tensor, mask: torch.Tensor, max_rows: int) -> torch.Tensor:
    """A task's real observations, (T, N, obs_dim) masked by (T, N), evenly thinned to at most `max_rows`."""
    obs = observations[mask > 0]
    if obs.shape[0] > max_rows:
        obs = obs[torch.linspace(0, obs.shape[0] - 1, max_rows).round().long()]
    return obs


def _relative_change(after: dict, before: dict, keys: list[str]) -> float:
    """||theta' - theta|| / ||theta|| over the parameters `keys` of one layer (0 when theta is 0 and unchanged)."""
    diff = torch.cat([(after[k] - before[k]).flatten() for k in keys]).norm()
    norm = torch.cat([before[k].flatten() for k in keys]).norm()
    return float(diff / norm) if norm > 0 else float(diff)


def adaptation_similarity(trainer, steps: int, num_tasks: int | None = None, episodes: int | None = None,
                          max_rows: int = MAX_ROWS, per_task: bool = False) -> dict:
    """Per layer and step k = 1..steps: CKA and SVCCA between the meta-policy's representations and those after k
    inner steps, and each layer's relative parameter change; means and stds over the held-out tasks (per task too
    with `per_task`), with the held-out returns after 0..steps steps of the same trace."""
    trace = list(trainer.adaptation_trace(num_tasks, steps, episodes))
    base = trace[0].params
    policy = trainer.policy
    param_layers = layers(policy)
    n_tasks = len(trace[0].tasks)
    obs, mask = trace[0].episodes.observations.cpu(), trace[0].episodes.mask.cpu()
    tasks = []
    with torch.no_grad():
        for i in range(n_tasks):
            rows = _rows(obs[i], mask[i], max_rows).to(trainer.device)
            before_params = _task_params(base, i, base)
            before = {k: v.double().cpu().numpy() for k, v in layer_outputs(policy, before_params, rows).items()}
            record = {m: {name: [] for name in before} for m in MEASURES}
            record["param_change"] = {name: [] for name in param_layers}
            for item in trace[1:]:
                after_params = _task_params(item.params, i, base)
                after = layer_outputs(policy, after_params, rows)
                for name, x in before.items():
                    y = after[name].double().cpu().numpy()
                    record["cka"][name].append(linear_cka(x, y))
                    record["svcca"][name].append(svcca(x, y))
                for name, keys in param_layers.items():
                    record["param_change"][name].append(_relative_change(after_params, before_params, keys))
            tasks.append(record)
    result = {"returns": [float(item.episodes.episode_returns().mean(1).mean()) for item in trace]}  # as evaluate
    for field in (*MEASURES, "param_change"):
        names = tasks[0][field]
        values = {name: np.array([t[field][name] for t in tasks]) for name in names}  # (tasks, steps)
        result[field] = {name: v.mean(0).tolist() for name, v in values.items()}
        result[f"{field}_std"] = {name: v.std(0).tolist() for name, v in values.items()}
    if per_task:
        result["per_task"] = tasks
    return result


def layer_freezing(trainer, steps: int, num_tasks: int | None = None, episodes: int | None = None,
                   progress: Callable[[str], None] = lambda text: None) -> dict:
    """Held-out returns after 0..steps steps when only each freezing set adapts (Trainer.evaluate with its keys)."""
    out = {}
    sets = freezing_sets(trainer.policy)
    for number, (name, keys) in enumerate(sets.items(), 1):
        progress(f"freezing {number}/{len(sets)}: adapting {name}")
        result = trainer.evaluate(num_tasks, steps, episodes, keys=keys)
        out[name] = {"keys": keys, "returns": [result[f"return_step_{s}"] for s in range(steps + 1)],
                     "std": [result[f"return_step_{s}_std"] for s in range(steps + 1)]}
    return out


def has_matplotlib() -> bool:
    """Whether matplotlib, the optional `plots` extra that draws the figures, can be imported."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def snapshot_files(run_dir: Path, every: int) -> list[Path]:
    """The kept snapshots whose iteration is a multiple of `every` (all of them with every = 1), oldest first."""
    kept = run.kept_checkpoints(run_dir)
    return [p for p in kept if int(p.stem.split("-")[-1]) % every == 0]


def analyze_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                out: str | os.PathLike | None = None, steps: int | None = None, tasks: int | None = None,
                episodes: int | None = None, snapshots: bool = True, every: int = 1, snapshot_steps: int | None = None,
                max_rows: int = MAX_ROWS, figures: bool = True, progress: Callable[[str], None] = print,
                overrides: dict | None = None) -> dict:
    """Analyse a run's latest checkpoint (or `checkpoint`) and, with `snapshots`, every kept snapshot whose
    iteration is a multiple of `every` (its similarity after 1..`snapshot_steps` steps, default `steps`); write
    ANALYSIS_FILE, MARKDOWN_FILE and (with `figures`) the FIGURES into `out` (default: the run directory) and return
    the analysis. Defaults: the run's eval_steps, eval_tasks and eval_episodes_per_task. `overrides`: speed settings
    of this process (threads), as for run.load_trainer."""
    path, cfg, ckpt = run.load_run(run_dir, checkpoint)
    for name, value in (("steps", steps), ("tasks", tasks), ("episodes", episodes), ("every", every),
                        ("snapshot_steps", snapshot_steps), ("max_rows", max_rows)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise AnalysisError(f"analyze: {name} must be a whole number >= 1, got {value!r}")
    if max_rows < 10:
        raise AnalysisError(f"analyze: max_rows must be at least 10 observations per task, got {max_rows}")
    out = Path(out) if out is not None else path
    run.writable_dir(out, "the analysis")  # before any work, so a bad --out fails at once
    if figures and not has_matplotlib():  # the tables do not need it: written, and the figures said to be skipped
        progress("note: no figures: they need matplotlib, the `plots` extra (pip install \"metarl[plots]\"); "
                 "writing the tables only")
        figures = False
    steps = steps or cfg.eval_steps or 1
    snapshot_steps = min(snapshot_steps or steps, steps)
    tasks = tasks or cfg.eval_tasks
    episodes = episodes or cfg.eval_episodes_per_task
    start = time.perf_counter()
    trainer = run.load_trainer(path, checkpoint, overrides)
    try:
        iteration = trainer.iteration
        progress(f"analyze {path} at iteration {iteration}: {tasks} held-out tasks x {episodes} episodes, "
                 f"{steps} adaptation steps")
        progress("similarity and parameter change")
        main = adaptation_similarity(trainer, steps, tasks, episodes, max_rows, per_task=True)
        freezing = layer_freezing(trainer, steps, tasks, episodes, progress)
        training = []
        files = snapshot_files(path, every) if snapshots else []
        for number, file in enumerate(files, 1):
            snap = run.load_checkpoint(path, file)
            at = run.checkpoint_iteration(snap)
            if at == iteration:
                continue
            progress(f"snapshot {number}/{len(files)}: iteration {at}")
            run.restore(trainer, snap, path)
            result = adaptation_similarity(trainer, snapshot_steps, tasks, episodes, max_rows)
            training.append({"iteration": at, **{k: result[k] for k in (*MEASURES, "param_change", "returns")}})
        training.append({"iteration": iteration,
                         **{k: main[k] for k in (*MEASURES, "param_change", "returns")}})
        training.sort(key=lambda r: r["iteration"])
        lrs = [cfg.eval_first_lr] + [cfg.eval_later_lr] * (steps - 1)
    finally:
        trainer.close()
    data = {"run": str(path), "checkpoint": None if checkpoint is None else str(checkpoint), "env": cfg.env,
            "algo": cfg.algo, "seed": cfg.seed, "iteration": iteration, "tasks": tasks, "episodes": episodes,
            "steps": steps, "snapshot_steps": snapshot_steps, "lrs": lrs, "eval_seed": cfg.eval_seed,
            "max_rows": max_rows,
            "layers": list(main["cka"]), "param_layers": list(main["param_change"]),
            "trained_keys": trainer.keys, "wall_s": time.perf_counter() - start,
            "threads": {"sampler": trainer.cfg.sampler_threads, "torch": trainer.cfg.torch_threads,
                        "update": trainer.cfg.update_threads}, "similarity": main, "freezing": freezing, "training": training}
    write_json(out / ANALYSIS_FILE, data)
    write_text(out / MARKDOWN_FILE, markdown(data))
    if figures:
        draw_figures(data, out)
    progress(f"wrote {out / ANALYSIS_FILE}, {MARKDOWN_FILE}" + (", the figures" if figures else ""))
    return data


# -- tables and figures -------------------------------------------------------------------------------------------

def _cells(values: list[float], digits: int = 3) -> list[str]:
    return [f"{v:.{digits}f}" for v in values]


def markdown(data: dict) -> str:
    """The analysis as markdown tables: similarity and parameter change by layer and step, freezing, training."""
    sim, steps = data["similarity"], data["steps"]
    step_cols = " | ".join(f"after {k}" for k in range(1, steps + 1))
    rule = " | ".join(["---"] * steps)
    lines = [f"# Feature reuse: {data['env']} / {data['algo']} / seed {data['seed']}, iteration {data['iteration']}",
             "", f"{data['tasks']} held-out tasks (eval_seed {data['eval_seed']}) x {data['episodes']} episodes; "
             f"step sizes {', '.join(map(str, data['lrs']))}; similarities on up to {data['max_rows']} observations "
             "per task that the meta-policy acted on; mean over tasks.", ""]
    for measure, title in (("cka", "Linear CKA"), ("svcca", "SVCCA (99% of the variance)")):
        lines += [f"## {title}: meta-policy against the adapted policy", "", f"| layer | {step_cols} |",
                  f"| --- | {rule} |"]
        lines += [f"| {name} | {' | '.join(_cells(v))} |" for name, v in sim[measure].items()]
        lines.append("")
    lines += ["## Relative parameter change ||theta' - theta|| / ||theta||", "", f"| layer | {step_cols} |",
              f"| --- | {rule} |"]
    lines += [f"| {name} | {' | '.join(_cells(v, 4))} |" for name, v in sim["param_change"].items()]
    all_cols = " | ".join(f"{k} steps" for k in range(steps + 1))
    lines += ["", "## Layer freezing at test time: held-out return when only these layers adapt", "",
              f"| adapted | {all_cols} |", f"| --- | {rule} | --- |"]
    lines += [f"| {name} | {' | '.join(_cells(r['returns'], 1))} |" for name, r in data["freezing"].items()]
    if len(data["training"]) > 1:
        names = data["layers"]
        lines += ["", "## Along training: linear CKA after one step", "", f"| iteration | {' | '.join(names)} |",
                  f"| --- | {' | '.join(['---'] * len(names))} |"]
        lines += [f"| {r['iteration']} | {' | '.join(_cells([r['cka'][n][0] for n in names]))} |"
                  for r in data["training"]]
    return "\n".join(lines) + "\n"


def draw_figures(data: dict, out: Path) -> list[Path]:
    """The three figures: similarity by layer and step; similarity after one step along training; the returns
    under each freezing set."""
    from metarl.experiments.report import pyplot

    plt = pyplot()
    title = f"{data['env']} / {data['algo']} / seed {data['seed']}"
    paths = []
    steps = list(range(1, data["steps"] + 1))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, measure, label in zip(axes, MEASURES, ("linear CKA", "SVCCA")):
        for name, values in data["similarity"][measure].items():
            ax.plot(steps, values, marker="o", label=name)
        ax.set_xlabel("adaptation steps")
        ax.set_title(label)
        ax.set_xticks(steps)
    axes[0].set_ylabel("similarity to the meta-policy")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{title}, iteration {data['iteration']}")
    paths.append(_save(fig, out / FIGURES["similarity"]))

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    iterations = [r["iteration"] for r in data["training"]]
    for name in data["layers"]:
        ax.plot(iterations, [r["cka"][name][0] for r in data["training"]], marker=".", label=name)
    ax.set_xlabel("meta-iteration of the snapshot")
    ax.set_ylabel("linear CKA after one step")
    ax.set_title(title)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / FIGURES["training"]))

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, r in data["freezing"].items():
        ax.plot(range(data["steps"] + 1), r["returns"], marker="o", label=name)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("held-out return")
    ax.set_xticks(range(data["steps"] + 1))
    ax.set_title(f"{title}: adapting only")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / FIGURES["freezing"]))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
