"""The report's markdown: per family, our methods beside the papers' numbers, the protocol and the timings."""

from __future__ import annotations

import math

import numpy as np

from metarl import runs as run
from metarl.config import ALGOS
from metarl.experiments.baselines import BASELINE_KINDS
from metarl.experiments.records import (
    ANIL_PAPER_TABLE2,
    MAML_PAPER_CURVES,
    METAWORLD_PAPER_TABLE1,
    METHOD_LABELS,
    RunRecord,
    base_algo,
    method_of,
    variant_label,
)
from metarl.experiments.sweep import (
    BASELINES_DIR,
    EVAL_STEPS,
    EVAL_TASKS,
    TIMING_FILE,
)

# -- markdown -----------------------------------------------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    """Seconds as `42 s`, `12.5 min` or `2.10 h`; `n/a` if unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_cell(cell: dict | None, step: int) -> str:
    key, success = f"return_step_{step}", f"success_step_{step}"
    if not cell or key not in cell["mean"]:
        return "-"
    text = f"{cell['mean'][key]:.1f} ± {cell['std'][key]:.1f}"
    if success in cell["mean"]:  # families that report success (Meta-World): the rate beside the return
        text += f"; success {cell['mean'][success]:.0%} ± {cell['std'][success]:.0%}"
    return text


def iterations_text(cell: dict) -> str:
    its = sorted(v["iterations"] for v in cell["per_seed"].values() if v.get("iterations") is not None)
    if not its:
        return "-"
    return str(its[0]) if its[0] == its[-1] else f"{its[0]}–{its[-1]}"


def mean_wall(cell: dict) -> str:
    walls = [v["wall_s"] for v in cell["per_seed"].values() if v.get("wall_s") is not None]
    return format_duration(float(np.mean(walls))) if walls else "n/a"


def lowest_end_over_peak(cell: dict) -> str:
    """The lowest seed's end / peak ratio (end_over_peak), with that seed; "-" where no seed has one."""
    ratios = {seed: v["end_over_peak"] for seed, v in cell["per_seed"].items() if v.get("end_over_peak") is not None}
    if not ratios:
        return "-"
    seed = min(ratios, key=ratios.get)
    return f"{ratios[seed]:.2f} (seed {seed})" if len(ratios) > 1 else f"{ratios[seed]:.2f}"


def method_label(method: str, cell: dict) -> str:
    if method == "pretrained":
        steps = sorted({v["ppo_steps"] for v in cell["per_seed"].values() if v.get("ppo_steps")})
        budget = "/".join(f"{s:,}" for s in steps) or "?"
        return f"PPO pre-trained on the task mixture ({budget} env steps) + adaptation"
    if "+" in method:
        return variant_label(method)
    if cell.get("setup"):  # the default departs from the papers' protocol (cheetah-dir: ProMP + LVC + Meta-SGD)
        return variant_label(method_of(method, cell["setup"])) + " (the default)"
    return METHOD_LABELS.get(method, method)


def method_order(cells: dict) -> list[str]:
    """Rows in order: each algorithm followed by its variants, then the baselines, then anything else."""
    order = [m for algo in ALGOS for m in [algo, *sorted(k for k in cells if k.startswith(f"{algo}+"))] if m in cells]
    order += [m for m in BASELINE_KINDS if m in cells]
    return order + sorted(set(cells) - set(order))


def env_table(env: str, cells: dict) -> list[str]:
    """The markdown table of one env: our methods, then the papers' reference rows."""
    head = ["| method | seeds | iterations | 0 steps | 1 step | 2 steps | 3 steps | ANIL paper, Table 2 "
            "(avg return; compare with 1 step) | 1 step: end / peak (lowest seed) | wall-clock per run (mean) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    order = method_order(cells)
    for method in order:
        cell = cells[method]
        paper = ANIL_PAPER_TABLE2.get(base_algo(method), {}).get(env)
        paper_text = f"{paper[0]:.1f} ± {paper[1]:.1f}" if paper else ""
        trained = base_algo(method) in ALGOS
        its = iterations_text(cell) if trained else "-"
        fall = lowest_end_over_peak(cell) if trained else "-"
        rows.append(f"| {method_label(method, cell)} | {len(cell['seeds'])} | {its} | "
                    + " | ".join(fmt_cell(cell, k) for k in range(EVAL_STEPS + 1))
                    + f" | {paper_text} | {fall} | {mean_wall(cell)} |")
    for method in ALGOS:
        paper = ANIL_PAPER_TABLE2[method].get(env)
        if paper and method not in cells:
            rows.append(f"| {METHOD_LABELS[method]}: not finished yet | 0 | - | - | - | - | - | "
                        f"{paper[0]:.1f} ± {paper[1]:.1f} | | |")
    curve = MAML_PAPER_CURVES.get(env)
    if curve:
        rows.append("| MAML, Finn et al. 2017 (reference result files) | - | - | "
                    + " | ".join(f"{v:.1f}" for v in curve) + " | | | |")
    for method, (train, test) in METAWORLD_PAPER_TABLE1.get(env, {}).items():
        rows.append(f"| {method}, Yu et al. 2019 (Meta-World, Table 1: average maximum success over 10 seeds) | 10 | "
                    f"- | | success {test:g}% (meta-test; meta-train {train:g}%) | | | | | |")
    return head + rows


def training_tasks_lines(cells: dict) -> list[str]:
    """For rows evaluated on the family's training tasks too (`metarl eval RUN --split train`, eval-train.json):
    their success after 0..3 steps there (Meta-World's meta-train success), one line each; [] where none was."""
    lines = []
    for method in method_order(cells):
        train = cells[method].get("train")
        if train and "success_step_1" in train["mean"]:
            seeds = len(train["seeds"])
            steps = ", ".join(f"{k}: {train['mean'][f'success_step_{k}']:.0%}" for k in range(EVAL_STEPS + 1)
                              if f"success_step_{k}" in train["mean"])
            lines.append(f"- {method_label(method, cells[method])} on the training tasks (meta-train), success "
                         f"after k steps ({seeds} seed{'s' * (seeds != 1)}): {steps}.")
    return lines + [""] if lines else []


def protocol_line(p: dict) -> str:
    ppo = ", ".join(f"{s:,}" for s in p["ppo_steps"]) or "not run yet"
    # frame skip: only for families that take it (cheetah); null is the family's own
    skip = "" if p.get("frame_skip") is None else f"frame skip {p['frame_skip']}; "
    return (f"horizon {p['horizon']}; {skip}meta-batch {p['meta_batch_size']} tasks x {p['episodes_per_task']} "
            f"episodes, {p['inner_steps']} inner step(s) of lr {p['inner_lr']}, TRPO max KL {p['max_kl']}, "
            f"{p['iterations']} iterations, policy {p['hidden_sizes']}, fvp_subsample {p['fvp_subsample']}, "
            f"first_order {p['first_order']}; evaluation on {p['eval_tasks']} held-out tasks (eval_seed "
            f"{p['eval_seed']}) x {p['eval_episodes_per_task']} episodes per step, step sizes {p['eval_first_lr']} "
            f"then {p['eval_later_lr']}; PPO budget (env steps): {ppo}")


def timing_table(runs: list[RunRecord]) -> list[str]:
    lines = ["| run | iterations | wall-clock | sum of time/iteration_s | final evaluations | sittings (jobs) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        if r.timing:
            sittings = r.timing.get("sittings", [])
            # a branched run's first sitting is its source's iterations (metarl branch), timed from their metrics
            jobs = ", ".join("branched" if "branched_from" in s else str(s.get("jobs", "?")) for s in sittings)
            wall, evals = format_duration(r.timing["wall_s"]), format_duration(r.timing["eval_s"])
            count = f"{len(sittings)} ({jobs})"
        else:
            wall, evals, count = f"{format_duration(r.iteration_time_s)} (iterations only)", "n/a", "n/a"
        lines.append(f"| {r.name} | {r.iterations_done}/{r.cfg.iterations} | {wall} | "
                     f"{format_duration(r.iteration_time_s)} | {evals} | {count} |")
    return lines


def render_markdown(report: dict) -> str:
    """report.md from the dict build_report returns (with its plots)."""
    sources = f"`{run.EVAL_FILE}`, `{run.METRICS_FILE}`, `{TIMING_FILE}`, `{BASELINES_DIR}/*.json`"
    lines = ["# Reproduction: ANIL and MAML on the MAML paper's RL task families", "",
             "Commands that regenerate every file here (from the repository root; `metarl sweep` is resumable, so "
             "running it again continues or skips finished work):", "", "```bash",
             *report["commands"], "```", "",
             f"Generated {report['generated']} from the run directories under `{report['root']}` (metarl "
             f"{report['metarl_version']}, commit {report['git_commit'] or 'unknown'}). Every number of ours is "
             f"read from those directories ({sources}); the papers' numbers are cited, not computed.", "",
             "## How to read the table", "",
             f"- Each of our cells is the mean ± std over seeds (population std, ddof=0) of one number per seed: "
             f"the mean return over {EVAL_TASKS} held-out tasks (drawn from `eval_seed`, the same tasks for every "
             "method) after k adaptation steps (policy gradient, step size 0.1 then 0.05). 0 steps is the "
             "policy as is (the RL analogue of the ANIL paper's NIL).",
             "- ANIL paper, Table 2 (Raghu et al., ICLR 2020): its single \"average return\" per method, mean ± std "
             "over 3 seeds. It does not say after how many steps; we compare it with our return after 1 step, the "
             "post-adaptation return meta-training optimises. Its RL protocol (horizon in particular) is not "
             "published in full, so compare with the protocol stated beside each table.",
             "- MAML, Finn et al. 2017: the reference adaptation curve from the MAML paper's result files "
             "(horizon 200 cheetah, 100 nav2d).",
             "- Baselines adapt every parameter with the same inner steps and held-out tasks: a freshly initialised "
             "policy (our initialisation, seeded by the seed), and a stable-baselines3 PPO policy of the same "
             "architecture trained on the task mixture (a new random task at every reset), its actor copied into "
             "our policy.",
             "- 1 step: end / peak: the final held-out return after one step over the best of the run's "
             "evaluations during training (every `eval_every` iterations, same tasks) and the final one; 1.00 is a "
             "run that ends at its best, the lowest seed is shown (\"-\" where the peak is not positive).",
             "- iterations: meta-iterations completed (one number if all seeds agree, else min–max); wall-clock: "
             f"seconds across sittings from `{TIMING_FILE}` (training, periodic and final evaluations), PPO training "
             "plus evaluation for the baselines."]
    if any(f"success_step_{k}" in cell["mean"] for cells in report["cells"].values() for cell in cells.values()
           for k in range(EVAL_STEPS + 1)):
        lines.append("- success (families that report it, Meta-World): the fraction of held-out episodes that "
                     "succeeded at any step (`info[\"success\"]`), per seed the mean over tasks; mean ± std over "
                     "seeds, beside the return.")
    lines.append("")
    for env in report["envs"]:
        cells = report["cells"].get(env, {})
        lines += [f"## {env}", "", f"Protocol: {protocol_line(report['protocol'][env])}.", "",
                  *env_table(env, cells), "", *training_tasks_lines(cells)]
        for kind in ("adaptation", "curves", "held_out"):
            name = report["plots"].get(env, {}).get(kind)
            if name:
                lines.append(f"![{kind} {env}]({name})")
        lines.append("")
    lines += ["## Wall-clock time of each run", "", *report["_timing_table"], "",
              "## Missing", ""]
    if report["missing"]:
        lines += [f"- {m}" for m in report["missing"]]
    else:
        lines.append("Nothing: every cell of the grid is finished with the full protocol.")
    return "\n".join(lines) + "\n"
