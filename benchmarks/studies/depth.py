"""Does depth help MAML adapt in RL, and does a learned inner-loop optimiser give a shallow policy what depth gives?
The depth study of Arnold, Iqbal, Sha, "When MAML Can Adapt Fast and How to Assist When It Cannot" (AISTATS 2021),
on policies.

MAML at each family's preset (configs/<env>.yaml, 500 iterations; on cheetah-dir ProMP's outer loop with LVC and
its trust region, issue 52's default) with one change per variant:
  depth1, depth2, depth4   hidden_sizes [100], [100, 100] (the protocol's), [100, 100, 100, 100], inner_optimizer sgd;
  depth1-meta-sgd          [100] with Meta-SGD's learned step sizes;
  depth1-kfo               [100] with the Kronecker-factored meta-optimiser (KFO).
Each run is a real run directory under --runs (resumable: run the command again to continue), evaluated at the end
as `metarl eval` does (40 held-out tasks, returns after 0..3 adaptation steps), then published: its small files
(checkpoint, config, metrics, eval.json, timing) are copied to --published, in git, where a later sitting finds it
and trains it no more. So the study grows over sittings on machines that keep nothing outside git, and the table
is always over the published runs. Writes benchmarks/results/studies/depth.{json,md,png}: per family and variant,
the held-out return after 0..3 steps (mean ± std over seeds) and the median seconds per iteration.

    python benchmarks/studies/depth.py --envs nav2d --seeds 0 1 2      # 15 runs
    python benchmarks/studies/depth.py --envs cheetah-vel --seeds 0    # 5 runs
    python benchmarks/studies/depth.py --envs nav2d --seeds 0 --iterations 2 --tasks 2 --episodes 2 \\
        --runs /tmp/d --published /tmp/dp --out /tmp/depth             # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from study_runs import EVAL_STEPS, publish, run_variant

from metarl.common.files import read_json, write_report
from metarl.experiments.figures import save_figure
from metarl.runs import EVAL_FILE, read_metrics

REPO = Path(__file__).resolve().parents[2]
ENVS = ["nav2d", "cheetah-vel", "cheetah-dir"]
# the sgd variants name their rule: cheetah-dir's preset learns its step sizes (Meta-SGD) since issue 52
VARIANTS = {"depth1": {"hidden_sizes": [100], "inner_optimizer": "sgd"},
            "depth2": {"hidden_sizes": [100, 100], "inner_optimizer": "sgd"},
            "depth4": {"hidden_sizes": [100, 100, 100, 100], "inner_optimizer": "sgd"},
            "depth1-meta-sgd": {"hidden_sizes": [100], "inner_optimizer": "meta-sgd"},
            "depth1-kfo": {"hidden_sizes": [100], "inner_optimizer": "kfo"}}


def summary(runs: list[Path]) -> dict:
    """Mean and std over seeds of the held-out return after 0..3 steps, and the median seconds per iteration."""
    evals = [read_json(r / EVAL_FILE)["returns"] for r in runs]
    times = [m["time/iteration_s"] for r in runs for m in read_metrics(r) if "time/iteration_s" in m]
    return {"seeds": len(runs),
            "mean": [statistics.fmean(e[f"return_step_{k}"] for e in evals) for k in range(EVAL_STEPS + 1)],
            "std": [statistics.pstdev([e[f"return_step_{k}"] for e in evals]) for k in range(EVAL_STEPS + 1)],
            "iteration_s": statistics.median(times) if times else None}


def markdown(result: dict) -> str:
    lines = ["| family | variant | seeds | " + " | ".join(f"{k} steps" for k in range(EVAL_STEPS + 1))
             + " | gain of the first step | s / iteration |",
             "| --- | --- | --- | " + "--- | " * (EVAL_STEPS + 1) + "--- | --- |"]
    for env, rows in result["envs"].items():
        for name, row in rows.items():
            # one seed has no spread: the cell says so rather than show a std of 0
            cells = [f"{m:.1f} ± {s:.1f}" if row["seeds"] > 1 else f"{m:.1f} (1 seed)"
                     for m, s in zip(row["mean"], row["std"])]
            speed = f"{row['iteration_s']:.2f}" if row["iteration_s"] else "-"
            lines.append(f"| {env} | {name} | {row['seeds']} | " + " | ".join(cells)
                         + f" | {row['mean'][1] - row['mean'][0]:.1f} | {speed} |")
    lines += ["", "MAML at each family's preset, one change per variant (hidden layers of 100 units; the inner "
              "rule); held-out return on the evaluation's 40 tasks after k adaptation steps, mean ± std over "
              "seeds of each seed's task mean; s / iteration: the median over the runs' iterations, each run timed "
              "with the code it was trained with and beside whatever else ran then (the like-for-like cost of each "
              "variant: `python benchmarks/inner_optimizer_time.py`, docs/inner-optimizers.md). "
              f"Command: `{result['command']}`, {result['date']}.", "",
              "What the table says, family by family (generated: a difference after one step counts where it "
              "exceeds twice the two rows' spread over seeds combined):", "", *answers(result)]
    return "\n".join(lines) + "\n"


def answers(result: dict) -> list[str]:
    """The study's two answers per family, one sentence each, from the table: does depth help MAML adapt (after one
    step, two and four hidden layers against one), and does a learned inner rule give the one-layer policy what depth
    gives. A difference counts where it exceeds twice the spread over seeds of the two rows compared (their stds
    combined); with one seed a row cannot be judged, and the sentence says so."""
    lines = []
    for env, rows in result["envs"].items():
        def share(diff: float) -> str:
            """The difference as a share of depth1's gain from its first adaptation step (how large it is)."""
            gain = rows["depth1"]["mean"][1] - rows["depth1"]["mean"][0] if "depth1" in rows else 0.0
            return f" ({diff / gain:+.0%} of depth1's first-step gain)" if gain > 0 else ""

        def compare(a: str, b: str) -> tuple[float, str] | None:
            """(mean difference b - a after one step, verdict) of two rows, None where either is missing."""
            if a not in rows or b not in rows:
                return None
            diff = rows[b]["mean"][1] - rows[a]["mean"][1]
            if min(rows[a]["seeds"], rows[b]["seeds"]) < 2:
                return diff, "not judged (one seed)"
            spread = 2 * (rows[a]["std"][1] ** 2 + rows[b]["std"][1] ** 2) ** 0.5
            return diff, ("better" if diff > spread else "worse" if diff < -spread else "within the seeds' spread")

        depth = [(name, compare("depth1", name)) for name in ("depth2", "depth4")]
        depth = [(name, c) for name, c in depth if c]
        if depth:
            said = "; ".join(f"{name} {c[0]:+.1f} against depth1{share(c[0])}, {c[1]}" for name, c in depth)
            helps = any(c[1] == "better" for _, c in depth)
            judged = all(c[1] != "not judged (one seed)" for _, c in depth)
            verdict = ("depth helps MAML adapt, as in the paper's vision results" if helps
                       else "depth does not help MAML adapt, unlike the paper's vision results" if judged
                       else "whether depth helps MAML adapt is not judged yet")
            lines.append(f"- **{env}**: {verdict} (held-out return after one step: {said}).")
        deepest = max((name for name in ("depth2", "depth4") if name in rows), key=lambda n: rows[n]["mean"][1],
                      default=None)
        for rule in ("depth1-meta-sgd", "depth1-kfo"):
            said = []
            own = compare("depth1", rule)
            if own:
                said.append(f"{own[0]:+.1f} against depth1{share(own[0])} ({own[1]})")
            against = compare(deepest, rule) if deepest else None
            if against:
                said.append(f"{against[0]:+.1f} against {deepest}, the best deeper policy ({against[1]})")
            if said and rule == "depth1-kfo" and against and against[1] != "not judged (one seed)":
                # the paper's second finding: KFO gives the shallow model the deeper one's fast adaptation
                said.append("as the paper finds for KFO" if against[1] != "worse"
                            else "unlike the paper, where KFO gives the shallow model what depth gives")
            if said:
                lines.append(f"- **{env}**, the one-layer policy's learned inner rule: {rule} {', '.join(said)}.")
    return lines


def figure(result: dict, path: Path) -> None:
    from metarl.experiments.report import pyplot

    plt = pyplot()
    envs = list(result["envs"])
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for number, (name, row) in enumerate(result["envs"][env].items()):
            ax.errorbar(range(EVAL_STEPS + 1), row["mean"], yerr=row["std"], marker="o", capsize=3,
                        label=f"{name} ({row['seeds']})", color=f"C{list(VARIANTS).index(name)}")
        ax.set_title(f"{env}: MAML")
        ax.set_xlabel("adaptation steps")
        ax.set_ylabel("held-out return")
        ax.set_xticks(range(EVAL_STEPS + 1))
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["nav2d"], choices=ENVS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--iterations", type=int, help="meta-iterations (default: the preset's, 500)")
    parser.add_argument("--tasks", type=int, help="meta_batch_size and eval_tasks (smoke tests only)")
    parser.add_argument("--episodes", type=int, help="episodes_per_task and eval_episodes_per_task (smoke tests)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "studies" / "depth")
    parser.add_argument("--published", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "depth_runs",
                        help="where finished runs are copied and read from (in git; a run there is not trained again)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "depth")
    parser.add_argument("--no-train", action="store_true", help="only report the finished runs (train nothing)")
    args = parser.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")
    small = {**({"iterations": args.iterations} if args.iterations else {}),
             **({"meta_batch_size": args.tasks, "eval_tasks": args.tasks} if args.tasks else {}),
             **({"episodes_per_task": args.episodes, "eval_episodes_per_task": args.episodes}
                if args.episodes else {})}
    result = {"command": " ".join(["python", "benchmarks/studies/depth.py", *(sys.argv[1:] if argv is None
                                                                             else argv)]), "envs": {}}
    for env in args.envs:
        for name in args.variants:
            for seed in args.seeds:
                run_dir = args.runs / f"{env}-maml-{name}-seed{seed}"
                if not (args.published / run_dir.name / EVAL_FILE).is_file() and not args.no_train:
                    print(f"== {run_dir.name}", flush=True)
                    run_variant(run_dir, env, {"algo": "maml", "seed": seed, **VARIANTS[name], **small})
                    publish(run_dir, args.published)
    # The table: every published run of every family and variant, whatever this invocation trained, so a sitting
    # on one family never drops another's rows.
    for env in ENVS:
        rows = {}
        for name in VARIANTS:
            finished = sorted(p for p in args.published.glob(f"{env}-maml-{name}-seed*")
                              if p.name.removeprefix(f"{env}-maml-{name}-seed").isdigit() and (p / EVAL_FILE).is_file())
            if finished:
                rows[name] = summary(finished)
        if rows:
            result["envs"][env] = rows
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = markdown(result)
    write_report(args.out, result, text)
    figure(result, args.out.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
