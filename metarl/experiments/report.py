"""The report of a sweep (`metarl report`) and the publishing of its runs (`metarl publish`).

write_report reads every run directory and baseline result under a sweep's ROOT (metarl.experiments.sweep) and writes, to OUT:

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
100 iterations as policy-only files, the baseline results (a PPO baseline as its actor alone) and commands.txt to a
folder that can be committed; the copies are ordinary run directories (`metarl eval` re-checks them) and a sweep root
in their own right (`metarl report DEST` rebuilds the report).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Sequence

from metarl import runs as run
from metarl.common import provenance
from metarl.common.files import write_json, write_text
from metarl.config import ALGOS
# The report's parts; this module re-exports what it held before the split (`metarl.experiments.report` gives this module)
from metarl.experiments.records import (ANIL_PAPER_TABLE2, MAML_PAPER_CURVES, METHOD_LABELS, PAPERS_SETUP,
                                        PUBLISHED_FILES, PUBLISHED_SNAPSHOT_EVERY, REPORT_JSON, REPORT_MD,
                                        ReportError, RunRecord, VARIANT_LABELS, base_algo, collect_baselines,
                                        collect_runs, end_over_peak, env_protocol, method_cells, method_of,
                                        missing_cells, read_run, reference_iterations, run_problem, setup_of,
                                        part_label, summarise, variant_label, variant_parts)  # noqa: F401
from metarl.experiments.tables import (env_table, fmt_cell, format_duration, iterations_text, lowest_end_over_peak,
                                       mean_wall, method_label, method_order, protocol_line, render_markdown,
                                       timing_table)  # noqa: F401
from metarl.experiments.figures import (aligned_curve, held_out_series, plot_adaptation, plot_curves, plot_held_out,
                                        plot_methods, pyplot)  # noqa: F401
from metarl.experiments.publish import (Published, compact_published, publish, publish_baselines, publish_files,
                                        publish_run, snapshot_iteration)  # noqa: F401
from metarl.experiments.baselines import BASELINE_KINDS
from metarl.experiments.sweep import ENVS, EVAL_TASKS, SEEDS, command_line, recorded_commands

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
                  "iteration_time_s": r.iteration_time_s, "timing": r.timing,
                  # each task's returns stay in the run's own eval.json (the report would only repeat them)
                  "eval": None if r.eval is None else {k: v for k, v in r.eval.items() if k != "per_task"}}
                 for r in runs],
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
