"""Rapid learning or feature reuse, in RL: `metarl analyze` over every published grid run, aggregated by family and
algorithm.

For each run in benchmarks/results/grid/runs/ (3 families x ANIL, MAML x 3 seeds, the papers' protocol: on
cheetah-dir its -paper rows), the analysis of its final checkpoint on the 40 held-out tasks (the evaluation's tasks,
seeds and step sizes) and of its kept snapshots every `--every` iterations, one step each (the cheetah runs keep them; nav2d's keep none), written to
OUT/<run>/analysis.{json,md}. Then, per family and algorithm, mean and std over seeds of: each layer's linear CKA
and SVCCA between the meta-policy and the policy after 1..3 inner steps, each layer's relative parameter change,
the held-out return when only the head, the last hidden layer and the head, ..., or all layers adapt (and the share
of the one-step gain that adapting the head alone keeps), and CKA along training. Writes
benchmarks/results/studies/feature_reuse.{json,md} and three figures. Finished analyses are skipped, so the command
resumes where it stopped.

    python benchmarks/studies/feature_reuse.py                     # the 18 runs (about 1 h on 2 cores)
    python benchmarks/studies/feature_reuse.py --runs nav2d-anil-seed0 --tasks 2 --episodes 2 --out /tmp/fr
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from metarl.common.files import read_json, write_json, write_report
from metarl.experiments import analysis
from metarl.experiments.figures import save_figure
from metarl.experiments.sweep import paper_run_name

REPO = Path(__file__).resolve().parents[2]
GRID = REPO / "benchmarks" / "results" / "grid" / "runs"
OUT = REPO / "benchmarks" / "results" / "studies" / "feature_reuse"
ENVS = ("cheetah-dir", "cheetah-vel", "nav2d")
ALGOS = ("anil", "maml")
FIGURES = {"similarity": "feature_reuse_similarity.png", "training": "feature_reuse_training.png",
           "freezing": "feature_reuse_freezing.png"}
THREAD_KEYS = ("sampler_threads", "torch_threads", "update_threads")
BODY_REUSE_CKA = 0.99  # the verdict's threshold: every hidden layer at least this similar after one step


def analyse(run_dir: Path, out: Path, args) -> dict:
    """The run's analysis, from OUT/<run>/analysis.json when it was made with these settings, else computed."""
    done = out / analysis.ANALYSIS_FILE
    settings = {"tasks": args.tasks, "episodes": args.episodes, "every": args.every, "snapshot_steps": 1}
    saved = read_json(done) if done.is_file() else {}
    if saved.get("study_settings") == settings:
        return saved
    print(f"== {run_dir.name}", flush=True)
    data = analysis.analyze_run(run_dir, out=out, tasks=args.tasks, episodes=args.episodes, every=args.every,
                                snapshot_steps=1, figures=False, progress=lambda text: print(f"   {text}", flush=True),
                                overrides={key: args.threads for key in THREAD_KEYS})
    data["run"] = run_dir.name  # not this machine's absolute path
    data["study_settings"] = settings
    write_json(done, data)
    return data


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "seeds": len(values)}


def _gain_kept(freezing: dict, full: str) -> float | None:
    """The share of the one-step gain of adapting `full` that adapting the head alone keeps:
    (R_head(1) - R(0)) / (R_full(1) - R(0)); None when adapting gains nothing."""
    start = freezing[full]["returns"][0]
    gain = freezing[full]["returns"][1] - start
    return (freezing["head"]["returns"][1] - start) / gain if gain > 0 else None


def aggregate(runs: dict[str, dict]) -> dict:
    """Per family and algorithm: the seeds' analyses averaged (mean and std over seeds of each seed's task mean)."""
    cells = {}
    for env in ENVS:
        for algo in ALGOS:
            group = [d for d in runs.values() if d["env"] == env and d["algo"] == algo]
            if not group:
                continue
            first = group[0]
            steps = first["steps"]
            cell = {"seeds": sorted(d["seed"] for d in group), "steps": steps, "layers": first["layers"],
                    "param_layers": first["param_layers"]}
            for field in ("cka", "svcca", "param_change"):
                cell[field] = {name: [_mean_std([d["similarity"][field][name][k] for d in group])
                                      for k in range(steps)] for name in first["similarity"][field]}
            cell["freezing"] = {name: [_mean_std([d["freezing"][name]["returns"][k] for d in group])
                                       for k in range(steps + 1)] for name in first["freezing"]}
            full = "all" if algo == "maml" else "head"
            kept = [g for g in (_gain_kept(d["freezing"], "all") for d in group) if g is not None]
            cell["head_gain_kept"] = _mean_std(kept) if kept else None
            cell["trained_set"] = full
            iterations = sorted({r["iteration"] for d in group for r in d["training"]})
            cell["training"] = [{"iteration": it, "cka": {
                name: _mean_std([r["cka"][name][0] for d in group for r in d["training"] if r["iteration"] == it])
                for name in first["layers"]}} for it in iterations
                if all(any(r["iteration"] == it for r in d["training"]) for d in group)]
            body = [name for name in first["layers"] if name.startswith("hidden")]
            cell["body_cka_min"] = min(cell["cka"][name][0]["mean"] for name in body)
            cell["head_cka"] = cell["cka"]["head"][0]["mean"]
            cells.setdefault(env, {})[algo] = cell
    return cells


def verdict(algo: str, cell: dict) -> str:
    """One sentence per cell, from its numbers: does the body keep its features after one step?"""
    body, head = cell["body_cka_min"], cell["head_cka"]
    if algo == "anil":
        return f"the body is frozen by construction (CKA 1); the head's output moves to CKA {head:.3f}"
    kept = cell["head_gain_kept"]
    ratio = f"; the head's 1 - CKA is {(1 - head) / (1 - body):.1f}x the body's largest" if body < 1 else ""
    reuse = (f"feature reuse: every hidden layer keeps CKA >= {BODY_REUSE_CKA} after one step (lowest {body:.4f}) "
             f"while the head's output moves to {head:.3f}{ratio}") if body >= BODY_REUSE_CKA else (
             f"the body changes too: a hidden layer falls to CKA {body:.3f} after one step (head {head:.3f}{ratio})")
    if kept is not None:
        reuse += f"; adapting only the head keeps {kept['mean']:.2f} of the one-step gain of adapting all layers"
    return reuse


def _row(stats: dict, digits: int) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown(result: dict) -> str:
    cells = result["cells"]
    first = next(iter(next(iter(cells.values())).values()))
    lines = ["**Verdicts**, from the numbers below (threshold: CKA "
             f"{BODY_REUSE_CKA} for every hidden layer after one step):", ""]
    for env, algos in cells.items():
        for algo, cell in algos.items():
            lines.append(f"- {env} {algo.upper()}: {verdict(algo, cell)}.")
    lines += ["", "### Similarity to the meta-policy after one inner step, per layer (mean ± std over seeds)", "",
              "| family | algorithm | measure | " + " | ".join(first["layers"]) + " |",
              "| --- | --- | --- | " + "--- | " * len(first["layers"])]
    for env, algos in cells.items():
        for algo, cell in algos.items():
            for measure, label in (("cka", "linear CKA"), ("svcca", "SVCCA")):
                lines.append(f"| {env} | {algo.upper()} | {label} | "
                             + " | ".join(_row(cell[measure][name][0], 4) for name in cell["layers"]) + " |")
    lines += ["", "### Relative parameter change after one inner step, ||theta' - theta|| / ||theta||", "",
              "| family | algorithm | " + " | ".join(first["param_layers"]) + " |",
              "| --- | --- | " + "--- | " * len(first["param_layers"])]
    for env, algos in cells.items():
        for algo, cell in algos.items():
            lines.append(f"| {env} | {algo.upper()} | "
                         + " | ".join(_row(cell["param_change"][name][0], 4) for name in cell["param_layers"]) + " |")
    sets = list(first["freezing"])
    lines += ["", "### Layer freezing at test time: held-out return after one step when only these layers adapt", "",
              "| family | algorithm | before adapting | " + " | ".join(sets) + " | head alone: share of the gain |",
              "| --- | --- | --- | " + "--- | " * (len(sets) + 1)]
    for env, algos in cells.items():
        for algo, cell in algos.items():
            kept = cell["head_gain_kept"]
            lines.append(f"| {env} | {algo.upper()} | {_row(cell['freezing']['head'][0], 1)} | "
                         + " | ".join(_row(cell["freezing"][name][1], 1) for name in sets)
                         + f" | {_row(kept, 2) if kept else '-'} |")
    lines += ["", "### Along training: linear CKA after one inner step, MAML (mean over seeds)", ""]
    for env, algos in cells.items():
        cell = algos.get("maml")
        if not cell or len(cell["training"]) < 2:
            lines.append(f"- {env}: only the final checkpoint (the runs keep no snapshots).")
            continue
        lines += [f"{env}:", "", "| iteration | " + " | ".join(cell["layers"]) + " |",
                  "| --- | " + "--- | " * len(cell["layers"])]
        lines += [f"| {r['iteration']} | " + " | ".join(f"{r['cka'][n]['mean']:.4f}" for n in cell["layers"]) + " |"
                  for r in cell["training"]]
        lines.append("")
    times = [f"{env} {statistics.fmean(w) / 60:.1f} min ({result['snapshots'][env]} snapshots)"
             for env, w in result["wall_s"].items() if w]
    lines += ["", f"Time to analyse one run at these settings (mean over the runs, one simulator and one torch thread, "
              f"with another process sharing the 2 cores): {'; '.join(times)}."]
    lines += ["", f"The {result['runs']} runs of benchmarks/results/grid/runs/, {result['tasks']} held-out tasks x "
              f"{result['episodes']} episodes each (the evaluation's); freezing sets: `head`; `hidden 2 + head`; "
              "`hidden 1-2 + head` (every layer, not log_std); `all` (also log_std: what MAML adapts). Share of the "
              "gain: (R_head(1) - R(0)) / (R_all(1) - R(0)), per seed. Per-run analyses in "
              f"benchmarks/results/studies/feature_reuse/. Command: `{result['command']}`, {result['date']}."]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def figures(result: dict, out_dir: Path) -> None:
    from metarl.experiments.report import pyplot

    plt = pyplot()
    cells = result["cells"]
    envs = list(cells)
    fig, axes = plt.subplots(1, len(envs), figsize=(4.2 * len(envs), 3.4), squeeze=False, sharey=True)
    for ax, env in zip(axes[0], envs):
        for algo, cell in cells[env].items():
            for name in cell["layers"]:
                means = [s["mean"] for s in cell["cka"][name]]
                ax.plot(range(1, len(means) + 1), means, marker="o", ls="-" if algo == "maml" else ":",
                        label=f"{algo.upper()} {name}")
        ax.set_title(env)
        ax.set_xlabel("adaptation steps")
        ax.set_xticks(range(1, result["steps"] + 1))
    axes[0][0].set_ylabel("linear CKA to the meta-policy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_dir / FIGURES["similarity"], dpi=110)

    along = [env for env in envs if "maml" in cells[env] and len(cells[env]["maml"]["training"]) > 1]
    fig, axes = plt.subplots(1, max(len(along), 1), figsize=(4.6 * max(len(along), 1), 3.4), squeeze=False)
    for ax, env in zip(axes[0], along):
        cell = cells[env]["maml"]
        for name in cell["layers"]:
            ax.plot([r["iteration"] for r in cell["training"]], [r["cka"][name]["mean"] for r in cell["training"]],
                    marker=".", label=name)
        ax.set_title(f"{env} MAML")
        ax.set_xlabel("meta-iteration of the snapshot")
        ax.set_ylabel("linear CKA after one step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / FIGURES["training"], dpi=110)

    fig, axes = plt.subplots(1, len(envs), figsize=(4.2 * len(envs), 3.4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        algos = list(cells[env])
        sets = list(cells[env][algos[0]]["freezing"])
        width = 0.8 / len(algos)
        for j, algo in enumerate(algos):
            stats = [cells[env][algo]["freezing"][name][1] for name in sets]
            ax.bar([i + j * width for i in range(len(sets))], [s["mean"] for s in stats], width,
                   yerr=[s["std"] for s in stats], label=algo.upper())
        ax.set_xticks([i + width * (len(algos) - 1) / 2 for i in range(len(sets))])
        ax.set_xticklabels(sets, rotation=20, fontsize=7)
        ax.set_title(env)
        ax.set_ylabel("held-out return after one step")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / FIGURES["freezing"], dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", metavar="NAME",
                        help="run directories of the grid to analyse (default: every family x algorithm x seed)")
    parser.add_argument("--grid", type=Path, default=GRID, help="folder of the published runs")
    parser.add_argument("--every", type=int, default=100, help="analyse the kept snapshots every N iterations")
    parser.add_argument("--tasks", type=int, help="held-out tasks (default: the run's; fewer for a smoke test)")
    parser.add_argument("--episodes", type=int, help="episodes per task per step (default: the run's)")
    parser.add_argument("--threads", type=int, default=1, help="simulator and torch threads (default 1: the "
                        "analysis shares the machine with training runs; 2 on an idle 2-core machine)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the per-run analyses; the report is "
                        "written beside it as <out>.json/.md and the figures")
    args = parser.parse_args(argv)
    names = args.runs or [paper_run_name(env, algo, seed) for env in ENVS for algo in ALGOS for seed in (0, 1, 2)]
    missing = [n for n in names if not (args.grid / n / "checkpoint.pt").is_file()]
    if missing:
        parser.error(f"no run directory {args.grid / missing[0]} (allowed: runs of {args.grid})")
    runs = {}
    for number, name in enumerate(names, 1):
        print(f"[{number}/{len(names)}] {name}", flush=True)
        runs[name] = analyse(args.grid / name, args.out / name, args)
    result = {"command": " ".join(["python", "benchmarks/studies/feature_reuse.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": len(runs),
              "tasks": next(iter(runs.values()))["tasks"], "episodes": next(iter(runs.values()))["episodes"],
              "steps": next(iter(runs.values()))["steps"], "cells": aggregate(runs),
              "wall_s": {env: [d["wall_s"] for d in runs.values() if d["env"] == env] for env in ENVS},
              "snapshots": {env: max((len(d["training"]) - 1 for d in runs.values() if d["env"] == env), default=0)
                            for env in ENVS}}
    write_report(args.out, result, markdown(result))
    figures(result, args.out.parent)
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
