"""The report of a sweep (`metarl report`) and the publishing of its runs (`metarl publish`).

write_report reads every run directory and baseline result under a sweep's ROOT (metarl.sweep) and writes, to OUT:

    report.md                   per family, our methods' returns after 0..3 adaptation steps beside the papers'
                                numbers, the protocol, wall-clock times, what is missing, and the commands behind it
    report.json                 the same figures, for other tools (see below)
    adaptation_<env>.png,       return against adaptation steps, meta-training curves and the held-out evaluations
    curves_<env>.png,           during training (matplotlib: the optional extra `plots`, `pip install
    heldout_<env>.png           "metarl[plots]"`)

report.json's top-level keys:

    generated, root, metarl_version, git_commit, machine   when, from which folder, by which code, on what
    commands    the commands that regenerate every file (ROOT/commands.txt, then this report's)
    statistic   what a cell's numbers are (per seed: the mean over the held-out tasks; per cell: mean and std)
    envs        the families reported, in order
    protocol    env -> the settings behind its numbers (horizon, meta-batch, iterations, PPO budget, ...)
    cells       env -> method (anil, maml, random-init, pretrained) -> {"seeds", "mean", "std", "per_seed"}; mean
                and std (population, ddof=0, over seeds) map return_step_0..return_step_3 to a number; a trained
                method's "setup" names where its runs depart from the papers' protocol ('' for nowhere; setup_of)
    references  the papers' figures, cited: anil_paper_table2 (method -> env -> [mean, std]) and
                maml_paper_curves (env -> returns after 0..3 steps), each with a note
    runs        one entry per run directory (finished or not: iterations, wall-clock, timing, eval)
    baselines   the baseline results as read from ROOT/baselines/
    missing     grid cells without a finished full-protocol result, each with the reason and what to do
    plots       env -> {"adaptation", "curves", "held_out"}: the figure files (None where there was nothing to draw)

publish copies each finished run's small files (no TensorBoard events; metrics gzipped), its kept snapshots every
100 iterations as policy-only files, the baseline results and commands.txt to a folder that can be committed; the
copies are ordinary run directories (`metarl eval` re-checks them) and a sweep root in their own right (`metarl
report DEST` rebuilds the report).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import filecmp
import json
import math
import os
import platform
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from metarl import runs as run
from metarl.baselines import BASELINE_KINDS
from metarl.common import provenance
from metarl.common.files import number, write_json, write_text
from metarl.config import ALGOS, config_to_dict, load_config
from metarl.sweep import (
    BASELINES_DIR,
    COMMANDS_FILE,
    ENVS,
    EVAL_STEPS,
    EVAL_TASKS,
    PPO_FACTS_SUFFIX,
    SEEDS,
    TIMING_FILE,
    baseline_name,
    command_line,
    read_json,
    recorded_commands,
    run_name,
    variant,
    with_command_last,
)

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
# What a published run keeps as it is; its metrics go gzipped and its kept snapshots policy-only (publish_files)
PUBLISHED_FILES = (run.CHECKPOINT_FILE, run.CONFIG_FILE, run.EVAL_FILE, TIMING_FILE, run.SETUP_FILE)
PUBLISHED_SNAPSHOT_EVERY = 100  # the kept snapshots a published run keeps: every 100 iterations (the studies' use)

# -- the papers' numbers (cited, never computed) ----------------------------------------------------------------
# Raghu et al., ICLR 2020, Table 2: "average return", mean +- std over 3 random initialisations.
ANIL_PAPER_TABLE2 = {
    "maml": {"cheetah-dir": (170.4, 21.0), "cheetah-vel": (-139.0, 18.9), "nav2d": (-20.3, 3.2)},
    "anil": {"cheetah-dir": (363.2, 14.8), "cheetah-vel": (-120.9, 6.3), "nav2d": (-20.1, 2.3)},
}
# Finn et al., ICML 2017, MAML result files: mean return over 40 test tasks after 0, 1, 2, 3 adaptation steps.
MAML_PAPER_CURVES = {
    "cheetah-dir": (-50.7, 293.2, 313.5, 315.7),
    "cheetah-vel": (-129.5, -78.6, -66.6, -60.8),
    "nav2d": (-40.4, -11.7, -3.3, -3.2),
}
METHOD_LABELS = {"anil": "ANIL (ours)", "maml": "MAML (ours)", "random-init": "random init + adaptation",
                 "pretrained": "PPO pre-trained on the task mixture + adaptation"}


VARIANT_LABELS = {"paper": "the papers' protocol (reinforce + TRPO)", "promp": "ProMP outer loop",
                  "trpo": "TRPO outer loop", "lvc": "LVC estimator", "dice": "DiCE estimator",
                  "reinforce": "REINFORCE estimator", "meta-sgd": "Meta-SGD inner rule", "kfo": "KFO inner rule",
                  "sgd": "SGD inner rule", "com": "centre-of-mass velocity reward",
                  "displacement": "displacement velocity reward"}
# The papers' setting of each of sweep.VARIANT_KEYS (Finn et al. 2017): a default that departs from it is named
PAPERS_SETUP = {"outer": "trpo", "estimator": "reinforce", "inner_optimizer": "sgd", "forward_velocity": None}


def method_of(algo: str, kind: str) -> str:
    """The report's method key of a run: its algorithm, with its variant (sweep.variant) after a '+'."""
    return f"{algo}+{kind}" if kind else algo


def base_algo(method: str) -> str:
    """The algorithm of a method key ('anil+promp-lvc' -> 'anil'), whose paper numbers it is compared with."""
    return method.split("+")[0]


def variant_parts(kind: str) -> list[str]:
    """The settings a variant's name joins ('promp-lvc' -> ['promp', 'lvc'], 'promp-meta-sgd' -> ['promp',
    'meta-sgd']): the longest known label at each place, a dash-separated word otherwise."""
    parts, rest = [], kind
    while rest:
        known = [k for k in VARIANT_LABELS if rest == k or rest.startswith(k + "-")]
        part = max(known, key=len) if known else rest.split("-")[0]
        parts.append(part)
        rest = rest[len(part) + 1:]
    return parts


def variant_label(method: str) -> str:
    """'ANIL (ours), ProMP outer loop + LVC estimator' for 'anil+promp-lvc'."""
    algo, _, kind = method.partition("+")
    parts = [VARIANT_LABELS.get(part, part) for part in variant_parts(kind)]
    return f"{METHOD_LABELS.get(algo, algo)}, {' + '.join(parts)}"


def setup_of(cfg) -> str:
    """The settings of a run that depart from the papers' (PAPERS_SETUP), joined as a variant's name ('promp-lvc' for
    cheetah-dir's default since issue 52); '' for the papers' own."""
    return "-".join(str(getattr(cfg, key) or "displacement") for key, paper in PAPERS_SETUP.items()
                    if getattr(cfg, key) != paper)


class ReportError(run.RunError):
    """An expected problem with a report (no such root, matplotlib missing); printed as one line."""


# -- reading a sweep's root ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunRecord:
    """What the report needs from one run directory."""

    name: str
    path: Path
    env: str
    algo: str
    seed: int
    cfg: object
    iterations_done: int
    curve: list            # (iteration, env_steps, post-adaptation return) per training iteration
    held_out: dict         # iteration -> held-out return after one step, at each evaluation during training
    eval: dict | None      # eval.json
    timing: dict | None    # timing.json
    iteration_time_s: float
    method: str = ""       # the algorithm, with its variant: `anil`, `anil+promp-lvc` (method_of)

    @property
    def finished(self) -> bool:
        """Trained to its configured iterations and evaluated by the sweep (0..3 steps) at that point."""
        e = self.eval or {}
        trained = self.iterations_done >= self.cfg.iterations
        return trained and e.get("iteration") == self.iterations_done and e.get("steps", -1) >= EVAL_STEPS

    @property
    def wall_s(self) -> float:
        """Wall-clock seconds across sittings (timing.json), else the sum of the iterations' times."""
        return self.timing["wall_s"] if self.timing else self.iteration_time_s


def read_run(path: Path) -> RunRecord:
    """A run directory's config, training curve, final evaluation and timing."""
    cfg = load_config(path / run.CONFIG_FILE)
    metrics = run.read_metrics(path)
    # the last line of an iteration wins
    by_iteration = {r["iteration"]: r for r in metrics if "returns/post_adaptation" in r}
    curve = [(i, by_iteration[i]["env_steps"], by_iteration[i]["returns/post_adaptation"])
             for i in sorted(by_iteration)]
    held_out = {r["iteration"]: r["eval/return_step_1"] for r in metrics if "eval/return_step_1" in r}
    return RunRecord(name=path.name, path=path, env=cfg.env, algo=cfg.algo, seed=cfg.seed, cfg=cfg,
                     iterations_done=max(by_iteration, default=0), curve=curve, held_out=held_out,
                     eval=read_json(path / run.EVAL_FILE), timing=read_json(path / TIMING_FILE),
                     iteration_time_s=sum(r.get("time/iteration_s", 0.0) for r in by_iteration.values()),
                     method=method_of(cfg.algo, variant(cfg)))


def collect_runs(root: Path) -> list[RunRecord]:
    """Every run directory (a folder with a config) directly under root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"sweep root {str(root)!r} does not exist; pass the folder given to `metarl sweep --root`")
    return [read_run(p) for p in sorted(root.iterdir()) if p.is_dir() and (p / run.CONFIG_FILE).is_file()]


def collect_baselines(root: Path) -> list[dict]:
    """The baseline results in ROOT/baselines/ (not the PPO models' facts)."""
    folder = Path(root) / BASELINES_DIR
    if not folder.is_dir():
        return []
    found = [read_json(p) for p in sorted(folder.glob("*.json")) if not p.name.endswith(PPO_FACTS_SUFFIX)]
    return [b for b in found if b and {"env", "kind", "seed", "returns"} <= set(b)]


def reference_iterations(env: str) -> int | None:
    """The protocol's number of iterations: the family preset's (500), None for a family without a preset."""
    path = run.default_config_file(env)
    return load_config(path).iterations if path else None


# -- the figures of the tables ------------------------------------------------------------------------------------

def summarise(values_by_seed: dict[int, dict]) -> dict:
    """Mean and std over seeds (population std, ddof=0) of each return_step_k, from per-seed eval returns."""
    seeds = sorted(values_by_seed)
    out = {"seeds": seeds, "mean": {}, "std": {}}
    for step in range(EVAL_STEPS + 1):
        key = f"return_step_{step}"
        values = [number(values_by_seed[s][key]) for s in seeds if key in values_by_seed[s]]
        if values:
            out["mean"][key] = float(np.mean(values))
            out["std"][key] = float(np.std(values))
    return out


def end_over_peak(r: RunRecord) -> float | None:
    """The final held-out return after one step over the best of the run's evaluations (training's every
    eval_every, and the final one): 1.0 for a run that ends at its best, below for one that fell from a peak
    (issue 34's "no fall" asks >= 0.9). None where the peak is not positive (the ratio says nothing there)."""
    final = number(r.eval["returns"]["return_step_1"])
    peak = max([final, *(number(v) for v in r.held_out.values())])
    return final / peak if peak > 0 else None


def method_cells(runs: list[RunRecord], baselines: list[dict]) -> dict:
    """env -> method -> summary over seeds, from finished runs and baseline results only."""
    cells: dict = {}
    for r in runs:
        if r.finished:
            cell = cells.setdefault(r.env, {}).setdefault(r.method, {"per_seed": {}})
            cell.setdefault("setups", set()).add(setup_of(r.cfg))
            cell["per_seed"][r.seed] = {"returns": r.eval["returns"], "iterations": r.iterations_done,
                                        "env_steps": r.eval.get("env_steps"), "wall_s": r.wall_s,
                                        "timing_source": TIMING_FILE if r.timing else "sum of time/iteration_s",
                                        "run_dir": r.name, "end_over_peak": end_over_peak(r)}
    for b in baselines:
        cell = cells.setdefault(b["env"], {}).setdefault(b["kind"], {"per_seed": {}})
        cell["per_seed"][b["seed"]] = {"returns": b["returns"], "wall_s": b.get("wall_s"),
                                       "ppo_steps": (b.get("ppo") or {}).get("steps")}
    for env_cells in cells.values():
        for cell in env_cells.values():
            cell.update(summarise({s: v["returns"] for s, v in cell["per_seed"].items()}))
            if "setups" in cell:  # what the row's runs departed from the papers with ('' for none), one name
                cell["setup"] = " / ".join(sorted(cell.pop("setups")))
    return cells


def missing_cells(runs: list[RunRecord], baselines: list[dict], envs, algos, seeds, kinds) -> list[str]:
    """Grid cells without a finished, full-protocol result, each with the reason and what to do."""
    by_name = {r.name: r for r in runs}
    have_baseline = {(b["env"], b["kind"], b["seed"]) for b in baselines}
    missing = []
    for env in envs:
        full = reference_iterations(env)
        for algo in algos:
            for seed in seeds:
                reason = run_problem(by_name.get(run_name(env, algo, seed)), full)
                if reason:
                    missing.append(f"{run_name(env, algo, seed)}: {reason}")
        for kind in kinds:
            for seed in seeds:
                if (env, kind, seed) not in have_baseline:
                    missing.append(f"{baseline_name(env, kind, seed)}: not run (`metarl sweep --only-baselines`)")
    for r in runs:  # a variant's run beside the grid, started but not finished
        reason = run_problem(r, reference_iterations(r.env)) if r.method != r.algo and r.env in envs else None
        if reason:
            missing.append(f"{r.name}: {reason}")
    return missing


def run_problem(r: RunRecord | None, full: int | None) -> str | None:
    """Why a run does not count as a finished full-protocol result, or None if it does."""
    if r is None:
        return "no run directory (not started, or kept elsewhere until it finishes)"
    if not r.finished:
        if r.iterations_done < r.cfg.iterations:
            return (f"interrupted at iteration {r.iterations_done}/{r.cfg.iterations} (re-run `metarl sweep` to "
                    "resume)")
        return f"trained but no final evaluation in {run.EVAL_FILE} (re-run `metarl sweep` to write it)"
    if r.eval.get("tasks") != EVAL_TASKS:
        return f"final evaluation on {r.eval.get('tasks')} held-out tasks, not {EVAL_TASKS} (in the table, flagged)"
    if full is not None and r.iterations_done < full:
        return f"finished with {r.iterations_done} of the protocol's {full} iterations (in the table, flagged)"
    return None


def env_protocol(env: str, runs: list[RunRecord], baselines: list[dict]) -> dict:
    """The protocol behind an env's numbers, read from its runs' configs (the family's preset if none yet)."""
    from metarl.envs import get_family, make

    cfgs = [r.cfg for r in runs if r.env == env and r.finished] or [r.cfg for r in runs if r.env == env]
    if not cfgs:
        path = run.default_config_file(env)
        cfgs = [load_config(path)] if path else []
    keys = ("horizon", "meta_batch_size", "episodes_per_task", "inner_steps", "inner_lr", "max_kl",
            "iterations", "hidden_sizes", "eval_episodes_per_task", "eval_first_lr", "eval_later_lr", "eval_seed",
            "fvp_subsample", "first_order", "frame_skip")
    protocol = {}
    for key in keys:
        values = sorted({json.dumps(config_to_dict(c)[key]) for c in cfgs})
        protocol[key] = json.loads(values[0]) if len(values) == 1 else " / ".join(values)
    if protocol.get("horizon") is None:
        protocol["horizon"] = get_family(env).horizon
    if protocol.get("frame_skip") is None:  # the family's own, where it has one (gymnasium MuJoCo envs)
        protocol["frame_skip"] = getattr(make(env).unwrapped, "frame_skip", None)
    protocol["ppo_steps"] = sorted({b["ppo"]["steps"] for b in baselines if b["env"] == env and b.get("ppo")})
    protocol["eval_tasks"] = EVAL_TASKS
    return protocol


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
    key = f"return_step_{step}"
    if not cell or key not in cell["mean"]:
        return "-"
    return f"{cell['mean'][key]:.1f} ± {cell['std'][key]:.1f}"


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
    if cell.get("setup"):  # the default departs from the papers' protocol (cheetah-dir: ProMP + LVC)
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
    return head + rows


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
            jobs = ", ".join(str(s.get("jobs", "?")) for s in sittings)
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
             "plus evaluation for the baselines.", ""]
    for env in report["envs"]:
        lines += [f"## {env}", "", f"Protocol: {protocol_line(report['protocol'][env])}.", "",
                  *env_table(env, report["cells"].get(env, {})), ""]
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


# -- figures ------------------------------------------------------------------------------------------------------

def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a one-line ReportError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the report draws its figures with matplotlib, which is not installed; install the "
                          "`plots` extra: pip install \"metarl[plots]\" (in a checkout: pip install -e \".[plots]\")"
                          ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def aligned_curve(group: list[RunRecord]):
    """Align seeds by iteration (their env steps differ when episodes end early); average over seeds present."""
    table: dict[int, list[tuple[float, float]]] = {}
    for r in group:
        for iteration, steps, ret in r.curve:
            table.setdefault(iteration, []).append((steps, ret))
    its = sorted(table)
    x = np.array([np.mean([s for s, _ in table[i]]) for i in its])
    values = [np.array([v for _, v in table[i]]) for i in its]
    return x, np.array([v.mean() for v in values]), np.array([v.min() for v in values]), \
        np.array([v.max() for v in values])


def held_out_series(group: list[RunRecord]):
    """The held-out evaluations of seeds aligned by iteration: (iterations, mean, min, max) over the seeds present."""
    table: dict[int, list[float]] = {}
    for r in group:
        for iteration, value in r.held_out.items():
            table.setdefault(iteration, []).append(number(value))
    its = sorted(table)
    return (np.array(its), np.array([np.mean(table[i]) for i in its]), np.array([min(table[i]) for i in its]),
            np.array([max(table[i]) for i in its]))


def plot_methods(env: str, runs: list[RunRecord], out: Path, name: str, series, has_data, labels: tuple) -> str | None:
    """One line per method (mean over seeds) with a min-max band, from `series(group) -> (x, mean, low, high)` over
    the env's runs that `has_data`; `labels`: x label, y label, title. Returns the file name, None if nothing to draw."""
    plt = pyplot()
    by_method: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.env == env and has_data(r):
            by_method.setdefault(r.method, []).append(r)
    if not by_method:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in method_order(by_method):
        group = by_method[method]
        x, mean, low, high = series(group)
        label = method.upper() if "+" not in method else variant_label(method).replace(" (ours)", "")
        (line,) = ax.plot(x, mean, label=f"{label} ({len(group)} seed{'s' if len(group) > 1 else ''})")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25)
    xlabel, ylabel, title = labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    return name


def plot_curves(env: str, runs: list[RunRecord], out: Path) -> str | None:
    """Meta-training curves: post-adaptation return against env steps, mean and min-max over seeds, per method."""
    return plot_methods(env, runs, out, f"curves_{env}.png", aligned_curve, lambda r: r.curve,
                        ("environment steps (mean over seeds)", "post-adaptation return (meta-batch mean)",
                         f"{env}: meta-training (band: min-max over seeds)"))


def plot_held_out(env: str, runs: list[RunRecord], out: Path) -> str | None:
    """Held-out return after one step at each evaluation during training (every eval_every iterations, the same
    tasks) against the iteration: mean and min-max over seeds, per method. A run that falls from a peak shows here."""
    return plot_methods(env, runs, out, f"heldout_{env}.png", held_out_series, lambda r: r.held_out,
                        ("meta-iteration", "held-out return after one step",
                         f"{env}: held-out during training (band: min-max over seeds)"))


def plot_adaptation(env: str, cells: dict, out: Path) -> str | None:
    """Return against adaptation steps 0..3: ours and the baselines (mean ± std over seeds), the papers' dashed."""
    plt = pyplot()
    if not cells and env not in MAML_PAPER_CURVES:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    steps = np.arange(EVAL_STEPS + 1)
    for method in method_order(cells):
        cell = cells[method]
        keys = [f"return_step_{k}" for k in steps]
        if all(k in cell["mean"] for k in keys):
            ax.errorbar(steps, [cell["mean"][k] for k in keys], yerr=[cell["std"][k] for k in keys], marker="o",
                        capsize=3, label=f"{method_label(method, cell)} ({len(cell['seeds'])} seeds)")
    if env in MAML_PAPER_CURVES:
        ax.plot(steps, MAML_PAPER_CURVES[env], "k--", marker="s", label="MAML, Finn et al. 2017 (reference)")
    for method, marker in (("anil", "^"), ("maml", "v")):
        paper = ANIL_PAPER_TABLE2[method].get(env)
        if paper:
            ax.errorbar([1], [paper[0]], yerr=[paper[1]], fmt=marker, color="gray", capsize=3,
                        label=f"{method.upper()}, ANIL paper Table 2 (avg return)")
    ax.set_xticks(steps)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"mean return over {EVAL_TASKS} held-out tasks")
    ax.set_title(f"{env}: adaptation on held-out tasks (mean ± std over seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    name = f"adaptation_{env}.png"
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    return name


# -- the report ---------------------------------------------------------------------------------------------------

def build_report(root: Path, envs: Sequence[str] = ENVS, algos: Sequence[str] = ALGOS,
                 seeds: Sequence[int] = SEEDS, kinds: Sequence[str] = BASELINE_KINDS,
                 command: Sequence[str] | None = None) -> dict:
    """Everything the report holds, as one dict (report.json is this, minus the keys starting with `_`)."""
    import metarl

    root = Path(root)
    envs = [run.check_env(env) for env in envs]
    runs = collect_runs(root)
    baselines = collect_baselines(root)
    reported = list(dict.fromkeys([*envs, *(r.env for r in runs), *(b["env"] for b in baselines)]))
    commands = [line for line in recorded_commands(root) if line.strip()]
    return {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "root": str(root), "metarl_version": metarl.__version__, "git_commit": provenance.git_commit(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "commands": commands + ([command_line(command)] if command is not None else []),
        "statistic": f"per seed: mean return over {EVAL_TASKS} held-out tasks; per cell: mean and population std "
                     "(ddof=0) over seeds",
        "envs": reported,
        "seeds": list(seeds),  # the grid's: a cell over fewer is partial
        "protocol": {env: env_protocol(env, runs, baselines) for env in reported},
        "cells": method_cells(runs, baselines),
        "references": {"anil_paper_table2": {m: {e: list(v) for e, v in t.items()}
                                             for m, t in ANIL_PAPER_TABLE2.items()},
                       "anil_paper_table2_note": "Raghu et al., ICLR 2020, Table 2: average return, mean ± std over "
                                                 "3 seeds; compared with our return after 1 adaptation step",
                       "maml_paper_curves": {e: list(v) for e, v in MAML_PAPER_CURVES.items()},
                       "maml_paper_curves_note": "Finn et al., ICML 2017, result files: mean return over 40 test "
                                                 "tasks after 0..3 steps; horizon 200 cheetah, 100 nav2d"},
        "runs": [{"name": r.name, "env": r.env, "algo": r.algo, "method": r.method, "seed": r.seed,
                  "finished": r.finished,
                  "iterations_done": r.iterations_done, "iterations": r.cfg.iterations, "wall_s": r.wall_s,
                  "iteration_time_s": r.iteration_time_s, "timing": r.timing, "eval": r.eval} for r in runs],
        "baselines": baselines,
        "missing": missing_cells(runs, baselines, envs, algos, seeds, kinds),
        "_runs": runs,
        "_timing_table": timing_table(runs),
    }


def write_report(root: str | os.PathLike, out: str | os.PathLike, envs: Sequence[str] = ENVS,
                 algos: Sequence[str] = ALGOS, seeds: Sequence[int] = SEEDS, kinds: Sequence[str] = BASELINE_KINDS,
                 command: Sequence[str] | None = None) -> dict:
    """Write report.md, report.json and the figures of the sweep under ROOT to OUT; return the report dict.

    envs/algos/seeds/kinds: the grid expected (what is absent is listed as missing); `command`: this command's argv
    (without `metarl`), printed last among the commands that regenerate the files.
    """
    pyplot()  # fail before writing anything if matplotlib is missing
    out = Path(out)
    report = build_report(Path(root), envs, algos, seeds, kinds, command)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = {env: {"adaptation": plot_adaptation(env, report["cells"].get(env, {}), out),
                             "curves": plot_curves(env, report["_runs"], out),
                             "held_out": plot_held_out(env, report["_runs"], out)} for env in report["envs"]}
    write_text(out / REPORT_MD, render_markdown(report))
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    write_json(out / REPORT_JSON, json.loads(json.dumps(public, default=str)))
    return report


def figure_count(report: dict) -> int:
    """How many figures write_report drew."""
    return sum(bool(name) for env_plots in report["plots"].values() for name in env_plots.values())


# -- publishing ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Published:
    """What publish did: finished runs copied, those already there (left alone), baseline files copied."""

    copied: list[str]
    unchanged: list[str]
    baseline_files: int
    recheck: str | None  # a `metarl eval` command that re-checks one published number


def publish_files(source: Path, target: Path, keep_every: int = PUBLISHED_SNAPSHOT_EVERY) -> None:
    """A run's published form in `target`: config, final checkpoint, evaluation and timing as they are, the metrics
    gzipped (run.pack_metrics: read_metrics reads them the same) and the kept snapshots whose iteration is a multiple
    of `keep_every` as policy-only (run.compact_snapshot: `metarl analyze` reads them), which keeps a published
    cheetah run near half a megabyte."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    if run.read_metrics(source):
        run.pack_metrics(source, target / run.METRICS_ARCHIVE)
        if target != source:
            (target / run.METRICS_FILE).unlink(missing_ok=True)  # an older, plain copy
    for path in run.kept_checkpoints(source):
        if snapshot_iteration(path) % keep_every == 0:
            run.compact_snapshot(path, target / run.KEPT_CHECKPOINTS_DIR / path.name)


def snapshot_iteration(path: Path) -> int:
    """The iteration of a kept snapshot, from its name (checkpoints/iteration-NNNNNN.pt)."""
    return int(path.stem.split("-")[-1])


def compact_published(folder: str | os.PathLike, keep_every: int = PUBLISHED_SNAPSHOT_EVERY) -> list[Path]:
    """Bring every run directory under `folder` (at any depth) to the published form of publish_files, in place:
    metrics gzipped, kept snapshots every `keep_every` iterations and policy-only, the others removed. Returns the
    run directories it changed."""
    changed = []
    for config in sorted(Path(folder).rglob(run.CONFIG_FILE)):
        path = config.parent
        before = sorted((p.name, p.stat().st_size) for p in path.rglob("*") if p.is_file())
        if (path / run.METRICS_FILE).is_file():
            run.pack_metrics(path)
            (path / run.METRICS_FILE).unlink()
        for snapshot in run.kept_checkpoints(path):
            if snapshot_iteration(snapshot) % keep_every:
                snapshot.unlink()
            else:
                run.compact_snapshot(snapshot, snapshot)
        if sorted((p.name, p.stat().st_size) for p in path.rglob("*") if p.is_file()) != before:
            changed.append(path)
    return changed


def publish_run(r: RunRecord, target: Path, keep_every: int = PUBLISHED_SNAPSHOT_EVERY) -> bool:
    """Copy one finished run to `target` in its published form (publish_files); False if it is there already."""
    ours, theirs = r.path / run.CHECKPOINT_FILE, target / run.CHECKPOINT_FILE
    if theirs.is_file() and filecmp.cmp(ours, theirs, shallow=False):
        return False  # published before: left alone, so that a copy re-evaluated since (eval.json) survives
    publish_files(r.path, target, keep_every)
    return True


def publish_baselines(root: Path, dest: Path) -> int:
    """Copy ROOT/baselines/ (results and PPO models) to DEST/baselines/; returns the number of files copied."""
    source = root / BASELINES_DIR
    if not source.is_dir():
        return 0
    (dest / BASELINES_DIR).mkdir(exist_ok=True)
    copied = 0
    for path in sorted(source.iterdir()):
        if path.suffix in (".json", ".zip") and not path.name.endswith(".tmp"):
            shutil.copy2(path, dest / BASELINES_DIR / path.name)
            copied += 1
    return copied


def publish(root: str | os.PathLike, dest: str | os.PathLike, command: Sequence[str] | None = None,
            keep_every: int = PUBLISHED_SNAPSHOT_EVERY) -> Published:
    """Copy the finished runs of the sweep under ROOT, its baselines and its commands.txt to DEST.

    A run already in DEST with the same final checkpoint is skipped. DEST's commands.txt keeps the commands
    published there from elsewhere first, then ROOT's, ending with this `command` (also recorded in ROOT).
    """
    from metarl.sweep import record_command

    root, dest = Path(root), Path(dest)
    runs = [r for r in collect_runs(root) if r.finished]
    dest.mkdir(parents=True, exist_ok=True)
    copied, unchanged = [], []
    for r in runs:
        (copied if publish_run(r, dest / r.name, keep_every) else unchanged).append(r.name)
    files = publish_baselines(root, dest)
    ours = recorded_commands(root) if command is None else with_command_last(recorded_commands(root), command)
    merged = [line for line in recorded_commands(dest) if line not in ours] + ours
    write_text(dest / COMMANDS_FILE, "".join(line + "\n" for line in merged))
    if command is not None:
        record_command(root, command)
    recheck = None
    if runs:
        r = runs[0]
        recheck = (f"metarl eval {dest / r.name} --tasks {EVAL_TASKS} --steps {EVAL_STEPS} "
                   f"--episodes {r.cfg.eval_episodes_per_task} --out /tmp/{r.name}-eval.json")
    return Published(copied, unchanged, files, recheck)
