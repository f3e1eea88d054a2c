"""The `metarl` command: train, resume and evaluate meta-RL runs, list task families.

    metarl train --env nav2d --algo maml --set meta_batch_size=10 inner_lr=0.05
    metarl train --resume runs/nav2d-maml-seed0-20250101-120000
    metarl eval runs/nav2d-maml-seed0-20250101-120000 --tasks 40 --steps 3
    metarl envs
    metarl sweep --root runs/grid --envs nav2d --seeds 0 1 2 --baselines random-init pretrained
    metarl report runs/grid --out results/grid
    metarl publish runs/grid results/grid/runs
    metarl analyze results/grid/runs/nav2d-maml-seed0 --out results/analysis/nav2d-maml-seed0

Argument parsing and printing only; run directories, checkpoints and logging live in metarl.runs, grids of runs in
metarl.experiments.sweep (and metarl.experiments.baselines), their reports and publishing in metarl.experiments.report.
Heavy imports (torch, the trainer) happen inside the commands, so --help and argument errors are instant.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import NoReturn

from metarl import __version__
from metarl.config import (
    ALGOS,
    BOOKKEEPING_KEYS,
    ConfigError,
    config_help,
    parse_overrides,
)

# Exit codes: 0 done; 1 an operating-system error (a full disk); 2 a usage, config or run problem; 3 training
# diverged (metarl.runs.divergence); 4 another rank of a torchrun launch failed (metarl.distributed); 130 interrupted
# (Ctrl-C, SIGTERM), a checkpoint saved.
EXIT_OS = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_RANK_FAILED = 4
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr: `metarl: error: <message>`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"metarl: error: {message} (see `{self.prog} --help`)\n")


class _HelpConfig(argparse.Action):
    """--help-config: print every config key with its type, default and meaning, then exit."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(format_config_help())
        parser.exit()


def format_config_help() -> str:
    """The config keys accepted by --set and config files, one per line."""
    rows = config_help()
    width = max(len(name) for name, *_ in rows)
    lines = ["Config keys (set with --set KEY=VALUE or in a --config YAML file; values are read as YAML):", ""]
    for name, type_name, default, text in rows:
        lines.append(f"  {name:<{width}}  {text} [{type_name}, default: {default}]")
    return "\n".join(lines)


# -- the parser -----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metarl", description="Meta-reinforcement learning with MAML and ANIL "
                     "(policy-gradient inner loop, TRPO outer loop) on task families such as HalfCheetah "
                     "direction/velocity and 2D navigation.",
                     epilog="Run `metarl COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"metarl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(commands)
    _add_eval(commands)
    _add_sweep(commands)
    _add_report(commands)
    _add_publish(commands)
    _add_branch(commands)
    _add_analyze(commands)
    commands.add_parser("envs", help="list the registered task families",
                        description="List the registered task families with a one-line description each. "
                        "Any of them, the gymnasium id of an env that honours the task contract, or your own "
                        "family as module:Class can be passed to `metarl train --env`.")
    return parser


def _add_train(commands) -> None:
    p = commands.add_parser(
        "train", help="meta-train a policy, or resume a stopped run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Meta-train a policy and write a run directory with config.yaml, checkpoint.pt, "
        "metrics.jsonl and\nTensorBoard logs (`tensorboard --logdir RUN_DIR`). Settings come from, "
        "lowest to highest priority:\nConfig defaults < the config file < --set < --algo/--seed/--iterations.",
        epilog="examples:\n"
        "  metarl train --env nav2d --iterations 100\n"
        "  metarl train --env cheetah-dir --algo maml --set meta_batch_size=20 hidden_sizes=[64,64]\n"
        "  metarl train --env mypkg.tasks:MyTaskEnv --seed 3\n"
        "  metarl train --resume runs/nav2d-anil-seed0-20250101-120000 --iterations 1000\n\n"
        "Ctrl-C (or SIGTERM) saves a checkpoint of the last completed iteration; resume with --resume.\n"
        "One process trains a run directory at a time (RUN_DIR/train.lock); `metarl eval` may run beside it.\n"
        "Exit codes: 0 done, 1 OS error (disk full), 2 refused with one line, 3 diverged (max_bad_iterations),\n"
        "130 interrupted (docs/reliability.md).\n"
        "List every config key for --set with `metarl train --help-config`.")
    p.add_argument("--env", metavar="NAME",
                   help="task family: a registered short name (see `metarl envs`), the gymnasium id of an env "
                   "that honours the task contract, or module:Class (default: the --config file's env)")
    p.add_argument("--algo", choices=ALGOS, default=None,
                   help="anil adapts only the policy head in the inner loop, maml adapts every parameter "
                   "(default: the config file's, else anil)")
    p.add_argument("--config", metavar="FILE",
                   help="YAML config file, or the name of an installed preset (cheetah-dir, cheetah-vel, nav2d, "
                   "quickstart) (default: the built-in family's preset; for your own family, the Config defaults)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seed of policy init, task sampling and environment noise (default: the config's, else 0)")
    p.add_argument("--iterations", type=int, metavar="N",
                   help="total meta-iterations; with --resume, raises the run's total (default: the config's)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="where to write the run (default: runs/<env>-<algo>-seed<N>-<YYYYmmdd-HHMMSS> in the current "
                   "directory)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override config keys, e.g. --set inner_lr=0.05 hidden_sizes=[64,64] "
                   "(default: none; list the keys with --help-config)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoint, with its saved config (only "
                   "--iterations, and --set of speed and disk settings such as device=cpu, may be combined with it)")
    p.add_argument("--help-config", action=_HelpConfig, help="list every config key with its meaning and default")


def _add_eval(commands) -> None:
    p = commands.add_parser(
        "eval", help="evaluate a run's checkpoint on held-out tasks",
        description="Evaluate the latest checkpoint of RUN_DIR (or --checkpoint) on held-out test tasks: the mean "
        "return after 0..K adaptation steps, with its std over tasks. Prints a table and writes it as JSON "
        "(RUN_DIR/eval.json unless --out says otherwise).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `metarl train`")
    p.add_argument("--tasks", type=_positive_int, metavar="N", help="held-out tasks (default: the run's eval_tasks)")
    p.add_argument("--steps", type=_non_negative_int, metavar="K",
                   help="adaptation steps; returns after 0..K are reported (default: the run's eval_steps)")
    p.add_argument("--episodes", type=_positive_int, metavar="N",
                   help="episodes per task per adaptation step (default: the run's eval_episodes_per_task)")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="test (default): the family's held-out tasks; train: its training tasks, for families with "
                   "a split of their own (Meta-World's meta-train success; written to RUN_DIR/eval-train.json)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="where to write the JSON report (default: RUN_DIR/eval.json); use it to re-check a "
                   "published run without touching its files")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="evaluate this checkpoint of the run instead of its latest, e.g. a snapshot kept by "
                   "keep_checkpoint_every (RUN_DIR/checkpoints/iteration-000100.pt); the report then goes "
                   "beside it (iteration-000100.eval.json) unless --out says otherwise")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="settings of speed for this evaluation alone, of "
                   f"{', '.join(BOOKKEEPING_KEYS)} (e.g. device=cpu for a run trained on a GPU); the run's "
                   "config.yaml is unchanged")


def _add_grid_args(p, envs, seeds, kinds, baselines_help: str) -> None:
    """--envs, --algos, --seeds and --baselines of sweep and report (None when not given: the defaults apply)."""
    p.add_argument("--envs", nargs="+", metavar="ENV", help=f"task families (default: {' '.join(envs)})")
    p.add_argument("--algos", nargs="+", choices=ALGOS, metavar="ALGO",
                   help=f"algorithms, of {', '.join(ALGOS)} (default: {' '.join(ALGOS)})")
    p.add_argument("--seeds", nargs="+", type=int, metavar="N",
                   help=f"seeds (default: {' '.join(map(str, seeds))})")
    p.add_argument("--baselines", nargs="+", choices=kinds, metavar="KIND",
                   help=f"{baselines_help}, of {', '.join(kinds)}")


def _add_sweep(commands) -> None:
    from metarl.experiments import sweep
    from metarl.experiments.baselines import BASELINE_KINDS, PPO_ENVS

    p = commands.add_parser(
        "sweep", help="meta-train a grid of (env, algo, seed) runs and its baselines, resumably",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Meta-train every (env, algo, seed) cell of a grid with the family's protocol preset (plus "
        "--set), one run\ndirectory each (ROOT/<env>-<algo>-seed<N>), then evaluate each on the report's protocol "
        f"(eval.json: {sweep.EVAL_TASKS}\nheld-out tasks, returns after 0..{sweep.EVAL_STEPS} adaptation steps). "
        "With --baselines, also adapt and evaluate a freshly\ninitialised policy (random-init) and a PPO policy "
        "pre-trained on the task mixture (pretrained) the same\nway (ROOT/baselines/). Finished work is skipped "
        "and interrupted work continues: run the same command again.",
        epilog="examples:\n"
        "  metarl sweep --root runs/grid                        # 3 envs x 2 algos x 3 seeds, one run at a time\n"
        "  metarl sweep --root runs/grid --envs nav2d --jobs 2  # two runs at a time, logs in ROOT/logs/\n"
        "  metarl sweep --root runs/grid --baselines random-init pretrained  # the grid, then both baselines\n"
        "  metarl sweep --root runs/grid --only-baselines --baselines random-init  # one baseline, no training\n\n"
        "Ctrl-C (or SIGTERM) saves a checkpoint; the same command resumes. Each command that finished or was\n"
        "stopped cleanly is recorded in ROOT/commands.txt, which `metarl report` prints as the commands behind the\n"
        "numbers. A resumed run must get the --set values it started with, except those of speed and disk use\n"
        f"({', '.join(sweep.BOOKKEEPING_KEYS)}).")
    p.add_argument("--root", required=True, metavar="ROOT", help="folder holding the grid's run directories")
    _add_grid_args(p, sweep.ENVS, sweep.SEEDS, BASELINE_KINDS, "after the meta-training runs, also compute these "
                   "baselines (default: none; with --only-baselines: all)")
    p.add_argument("--only-baselines", action="store_true",
                   help="compute the baselines only, training no run (default: train the runs)")
    p.add_argument("--jobs", type=_positive_int, metavar="N",
                   help="runs trained at once, in child processes logging to ROOT/logs/ (default 1); with N > 1 "
                   "each run gets --set sampler_threads=1 update_threads=1 unless you set them")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override config keys of the family's preset for every run and baseline (default: none; "
                   "see `metarl train --help-config`)")
    p.add_argument("--eval-tasks", type=_positive_int, metavar="N",
                   help=f"held-out tasks of the final evaluation (default: {sweep.EVAL_TASKS}, the protocol)")
    p.add_argument("--engine", choices=sweep.ENGINES, help="where the runs train: local (this machine, --jobs at "
                   "a time; the default) or ray (tasks of a Ray cluster; ROOT on a file system every machine sees; "
                   "pip install \"metarl[ray]\")")
    p.add_argument("--ray-address", metavar="HOST:PORT", help="the Ray cluster's head (default: a local Ray started "
                   "for the call)")
    p.add_argument("--cpus-per-run", type=_positive_int, metavar="N",
                   help="CPUs each run reserves on Ray (default 1: one simulator and one update thread)")
    p.add_argument("--ppo-steps", type=_positive_int, metavar="N",
                   help="PPO env steps of the pretrained baseline (default: 1,000,000 for cheetah, 200,000 for nav2d)")
    p.add_argument("--ppo-envs", type=_positive_int, metavar="N",
                   help=f"task-mixture envs PPO steps side by side (default: {PPO_ENVS})")


def _add_report(commands) -> None:
    from metarl.experiments import sweep
    from metarl.experiments.baselines import BASELINE_KINDS

    p = commands.add_parser(
        "report", help="write the table, JSON and figures of a sweep's runs",
        description="Read every run directory and baseline result under ROOT (a `metarl sweep --root` or a "
        "`metarl publish` destination) and write OUT/report.md (per family, returns after 0..3 adaptation steps "
        "beside the papers' numbers, the protocol, wall-clock times, what is missing), OUT/report.json and the "
        "figures (PNG; needs matplotlib: pip install \"metarl[plots]\").")
    p.add_argument("root", metavar="ROOT", help="folder holding the grid's run directories")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the report and figures to")
    _add_grid_args(p, sweep.ENVS, sweep.SEEDS, BASELINE_KINDS, "baselines expected in the grid (default: all)")


def _add_publish(commands) -> None:
    p = commands.add_parser(
        "publish", help="copy a sweep's finished runs to a folder that can be committed",
        description="Copy each finished run under ROOT (config, final checkpoint, kept snapshots every 100 "
        "iterations as policy-only files, metrics gzipped, eval.json, timing; no TensorBoard events), the baseline "
        "results and commands.txt to DEST. The copies "
        "are ordinary run directories (`metarl eval DEST/RUN` re-checks a number) and `metarl report DEST` "
        "rebuilds the report. A run already in DEST with the same final checkpoint is left as it is.")
    p.add_argument("root", metavar="ROOT", help="folder holding the grid's run directories (with --compact: the "
                   "published folder to compact in place)")
    p.add_argument("dest", metavar="DEST", nargs="?", help="destination folder")
    p.add_argument("--keep-every", type=_positive_int, default=None, metavar="N",
                   help="kept snapshots to publish: those of every N-th iteration, policy-only (default: 100)")
    p.add_argument("--unfinished", action="store_true",
                   help="also publish the runs still training, as they stand (checkpoint and metrics), so that a "
                        "later sitting resumes a copy of one: stop its training first")
    p.add_argument("--compact", action="store_true",
                   help="bring the run directories already published under ROOT to the compact form in place "
                        "(metrics gzipped, kept snapshots every N iterations and policy-only, PPO baselines as "
                        "their actor); no DEST")


def _add_branch(commands) -> None:
    p = commands.add_parser(
        "branch", help="start a new run from another run's kept checkpoint with some settings changed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a new run directory that continues SOURCE from its checkpoint of iteration N with the "
        "--set changes:\nthe config with them, that checkpoint, the kept snapshots, metrics and set-up up to N, and "
        "branch.json\n(where it came from). Continue it with `metarl train --resume OUT`; a sweep resumes it where it "
        "is one of its cells.\nWithout a change the branch continues exactly as SOURCE did.",
        epilog="example:\n  metarl branch runs/grid/cheetah-dir-anil-seed2 --at 200 --out "
        "runs/grid/cheetah-dir-anil-kl0.5-seed2 --set promp_max_kl=0.5")
    p.add_argument("source", metavar="SOURCE", help="the run directory to branch from")
    p.add_argument("--at", type=int, required=True, metavar="N",
                   help="the iteration to start from: one of SOURCE's kept checkpoints (checkpoints/iteration-N.pt) "
                   "or its latest")
    p.add_argument("--out", required=True, metavar="DIR", help="the new run directory (must not exist or be empty)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="the settings to change (default: none, a branch that repeats SOURCE)")


def _add_analyze(commands) -> None:
    p = commands.add_parser(
        "analyze", help="rapid learning or feature reuse: per-layer similarity and layer freezing of a run",
        description="The ANIL paper's instruments on a run's held-out tasks (the evaluation's tasks, seeds and "
        "step sizes): each layer's representation similarity (linear CKA, SVCCA) between the meta-policy and the "
        "policy after 1..K adaptation steps, each layer's relative parameter change, the held-out returns when "
        "only the head, the last hidden layers and the head, ..., or all layers adapt, and the similarity along "
        "training for each kept snapshot. Writes analysis.json, analysis.md and PNG figures (needs matplotlib: "
        "pip install \"metarl[plots]\") into RUN_DIR or --out.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `metarl train`")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="analyse this checkpoint instead of the latest (e.g. RUN_DIR/checkpoints/iteration-000100.pt)")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder for the files (default: RUN_DIR)")
    p.add_argument("--steps", type=_positive_int, metavar="K", help="adaptation steps (default: the run's eval_steps)")
    p.add_argument("--tasks", type=_positive_int, metavar="N", help="held-out tasks (default: the run's eval_tasks)")
    p.add_argument("--episodes", type=_positive_int, metavar="N",
                   help="episodes per task per step (default: the run's eval_episodes_per_task)")
    p.add_argument("--every", type=_positive_int, default=1, metavar="N",
                   help="along training, only the kept snapshots whose iteration is a multiple of N (default: all)")
    p.add_argument("--snapshot-steps", type=_positive_int, metavar="K",
                   help="adaptation steps analysed for each snapshot (default: --steps; 1 is the cheapest)")
    p.add_argument("--no-snapshots", action="store_true", help="skip the analysis along training")
    p.add_argument("--no-figures", action="store_true", help="write the JSON and markdown only (no matplotlib)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# -- the commands ---------------------------------------------------------------------------------------------

def _launch_device(args: argparse.Namespace, world) -> str:
    """The device the run will train on, read by every rank of a torchrun launch before they join (gloo or NCCL);
    a run that cannot train on these ranks is refused here, before anything is written."""
    from metarl import distributed
    from metarl import runs as run
    from metarl.config import load_config
    from metarl.trainer import resolve_device

    if args.resume is not None:  # the saved config with this sitting's speed settings (e.g. --set device=cpu)
        speed = {key: value for key, value in parse_overrides(args.overrides or []).items() if key in BOOKKEEPING_KEYS}
        cfg = load_config(run.require_run_dir(args.resume) / run.CONFIG_FILE, speed)
    else:
        cfg = run.resolve_config(args.env, args.config, parse_overrides(args.overrides),
                                 {"algo": args.algo, "seed": args.seed, "iterations": args.iterations})
    if distributed.problem(world, cfg):
        raise run.RunError(distributed.problem(world, cfg))
    return resolve_device(cfg.device).type


def _train_rank(world) -> int:
    """A rank other than 0 of a torchrun launch: train what rank 0 announces (its run directory, config and
    checkpoint), writing nothing; nothing if rank 0 announces nothing (it stopped before training)."""
    from metarl import runs as run

    job = world.broadcast(None)
    if job is None:
        return 0
    run_dir, cfg, ckpt = job
    try:
        run.train(Path(run_dir), cfg, ckpt, bar=False, world=world)
    except run.Interrupted:
        return EXIT_INTERRUPTED
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from metarl import distributed
    from metarl import runs as run

    world = distributed.launched_world()  # rank 0 of 1 unless torchrun launched several (metarl.distributed)
    if world.size == 1:
        return _train_main(args, world, run)
    distributed.join(world, _launch_device(args, world))
    resume = "resume it with `torchrun ... -m metarl train --resume RUN_DIR`"
    # SIGTERM (torchrun stopping the launch after another rank failed) is an interrupt for the whole command, not
    # only inside training: the default action would end this rank silently on its way out.
    with run.sigterm_as_interrupt():
        try:
            return _train_rank(world) if not world.main else _train_main(args, world, run)
        except RuntimeError as exc:  # a collective failed: another rank died, or hung past the timeout
            if not distributed.is_collective_failure(exc):
                raise
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # say it before torchrun's SIGTERM can cut us short
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            print(f"metarl: error: rank {world.rank} of {world.size}: a collective operation failed ({first}): "
                  f"another rank stopped or hung; the run directory's last checkpoint is intact: {resume}",
                  file=sys.stderr)
            return EXIT_RANK_FAILED
        except KeyboardInterrupt:  # stopped outside training (its own interrupt path saves and says so)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"metarl: error: rank {world.rank} of {world.size}: stopped (by torchrun after another rank "
                  f"failed, or Ctrl-C); the run directory's last checkpoint is intact: {resume}", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            distributed.leave()


def _train_main(args: argparse.Namespace, world, run) -> int:
    """`metarl train` in the process that owns the run directory (rank 0 of a torchrun launch)."""

    announced = False

    def announce(job) -> None:  # the other ranks wait for this: what to train, or None for nothing
        nonlocal announced
        if world.size > 1 and not announced:
            announced = True
            world.broadcast(job)

    try:
        return _train_run(args, world, run, announce)
    finally:
        announce(None)  # stopped before training (done already, an error): the other ranks end too


def _fvp_precision(device: str) -> str:
    from metarl.trainer import resolve_device, resolve_fvp_precision

    try:
        return resolve_fvp_precision("auto", resolve_device(device))
    except ValueError:  # no GPU: the trainer says so in one line
        return "float32"


def _on_gpu(device: str) -> bool:
    from metarl.trainer import resolve_device

    try:
        return resolve_device(device).type == "cuda"
    except ValueError:  # no GPU: the trainer says so in one line
        return False


def _train_run(args: argparse.Namespace, world, run, announce) -> int:
    with contextlib.ExitStack() as hold:  # the run directory's lock, from before its first write to the end
        if args.resume is not None:
            given = [flag for flag, value in (("--env", args.env), ("--algo", args.algo), ("--config", args.config),
                                              ("--seed", args.seed), ("--run-dir", args.run_dir)) if value]
            speed = parse_overrides(args.overrides or [])
            given += [f"--set {key}" for key in speed if key not in BOOKKEEPING_KEYS]
            if given:
                raise run.RunError(f"{', '.join(given)} cannot be combined with --resume: a resumed run keeps its "
                                   "saved config.yaml (only --iterations can change, and with --set the settings "
                                   f"of speed and disk use: {', '.join(BOOKKEEPING_KEYS)})")
            run.writable_dir(run.require_run_dir(args.resume))
            hold.enter_context(run.run_lock(args.resume))
            run_dir, cfg, ckpt = run.prepare_resume(args.resume, args.iterations, speed)
            done = int(ckpt["trainer"]["iteration"])
            if run.is_complete(cfg, ckpt):
                print(f"{run_dir} is already complete ({done}/{cfg.iterations} iterations); "
                      f"train longer with `metarl train --resume {run_dir} --iterations N`")
                return 0
            if done < cfg.iterations:
                print(f"resuming {run_dir} at iteration {done + 1}/{cfg.iterations}")
            else:
                print(f"resuming {run_dir}: its final evaluation (iteration {done}) was interrupted; running it")
        else:
            flags = {"algo": args.algo, "seed": args.seed, "iterations": args.iterations}
            cfg = run.resolve_config(args.env, args.config, parse_overrides(args.overrides), flags)
            path = run.writable_dir(run.new_run_path(cfg, args.run_dir))
            hold.enter_context(run.run_lock(path))
            run_dir, ckpt = run.create_run(cfg, path), None
            print(f"run directory: {run_dir}")
            print(f"training {cfg.algo} on {cfg.env}, seed {cfg.seed}, {cfg.iterations} iterations of "
                  f"{cfg.meta_batch_size} tasks x {cfg.episodes_per_task} episodes")
        print(f"watch it with: tensorboard --logdir {run_dir}", flush=True)
        if world.size > 1:
            print(f"training on {world.size} ranks: {cfg.meta_batch_size} tasks split between them", flush=True)
        if cfg.device != "cpu" and cfg.task_chunk < cfg.meta_batch_size and _on_gpu(cfg.device):
            print(f"note: on a GPU the update is fastest in one chunk: add --set task_chunk={cfg.meta_batch_size} "
                  f"(task_chunk {cfg.task_chunk} is the CPU's best; docs/performance.md)", flush=True)
        if cfg.fvp_precision == "auto" and cfg.outer == "trpo":
            print(f"Fisher-vector products in {_fvp_precision(cfg.device)} (fvp_precision: auto, chosen for this "
                  "machine's hardware; docs/performance.md)", flush=True)
        announce((str(run_dir), cfg, ckpt))
        try:
            run.train(run_dir, cfg, ckpt, world=world)
        except run.Interrupted as stop:
            print(f"\ninterrupted: saved a checkpoint of iteration {stop.iteration} in {run_dir}\n"
                  f"resume with: metarl train --resume {run_dir}", file=sys.stderr)
            return EXIT_INTERRUPTED
    print(f"done: {cfg.iterations} iterations in {run_dir}\nevaluate with: metarl eval {run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from metarl import runs as run

    out = args.out or run.default_eval_path(Path(args.run_dir), args.checkpoint, args.split)
    report = run.evaluate_run(args.run_dir, args.tasks, args.steps, args.episodes, out=out,
                              checkpoint=args.checkpoint, speed=parse_overrides(args.overrides), split=args.split)
    print(report.table())
    print(f"\nwrote {out}")
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from metarl import runs as run
    from metarl.config import load_config
    from metarl.envs import families, families_on_first_use
    from metarl.experiments.report import (
        VARIANT_LABELS,
        part_label,
        setup_of,
        variant_parts,
    )

    rows = {**families(), **families_on_first_use()}
    width = max(len(name) for name in rows)
    for name, description in rows.items():
        print(f"{name:<{width}}  {description}")
    print("\nor pass your own family to `metarl train --env` as module:Class")
    # the installed presets and how each trains: `--env ENV` takes ENV's, `--config NAME` any of them
    presets = {p.stem: load_config(p) for p in sorted(run.presets_dir().glob("*.yaml"), key=lambda p: p.stem)}
    width = max(len(name) for name in presets)
    print("\npresets (`metarl train --config NAME`; `--env ENV` takes the one named ENV):")
    for name, cfg in presets.items():
        setup = setup_of(cfg)
        how = " + ".join(part_label(part) for part in variant_parts(setup)) if setup else VARIANT_LABELS["paper"]
        print(f"  {name:<{width}}  {cfg.env}, {cfg.iterations} iterations: {how}")
    return 0


def _typed(args: argparse.Namespace, options: tuple[str, ...]) -> list[str]:
    """The given options of `args` back as command-line words, in the order of `options` (for commands.txt)."""
    words: list[str] = []
    for flag in options:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        elif value is not None and value is not False:
            words += [flag, str(value)]
    return words


def cmd_sweep(args: argparse.Namespace) -> int:
    from metarl.experiments import sweep

    argv = ["sweep", "--root", args.root, *_typed(args, ("--envs", "--algos", "--seeds", "--only-baselines",
                                                         "--baselines", "--jobs", "--eval-tasks", "--ppo-steps",
                                                         "--ppo-envs", "--engine", "--ray-address",
                                                         "--cpus-per-run"))]
    argv += ["--set", *args.overrides] if args.overrides else []
    given = {key: value for key, value in (("envs", args.envs), ("algos", args.algos), ("seeds", args.seeds),
                                           ("jobs", args.jobs), ("eval_tasks", args.eval_tasks),
                                           ("ppo_envs", args.ppo_envs), ("engine", args.engine),
                                           ("cpus_per_run", args.cpus_per_run), ("ray_address", args.ray_address))
             if value is not None}
    return sweep.sweep(args.root, overrides=args.overrides, baseline_kinds=args.baselines or (),
                       only_baselines=args.only_baselines, ppo_steps=args.ppo_steps, command=argv, **given)


def cmd_report(args: argparse.Namespace) -> int:
    from metarl.experiments import report

    argv = ["report", args.root, "--out", args.out, *_typed(args, ("--envs", "--algos", "--seeds", "--baselines"))]
    given = {key: value for key, value in (("envs", args.envs), ("algos", args.algos), ("seeds", args.seeds),
                                           ("kinds", args.baselines)) if value is not None}
    result = report.write_report(args.root, args.out, command=argv, **given)
    out = Path(args.out)
    print(f"wrote {out / report.REPORT_MD}, {report.REPORT_JSON} and {report.figure_count(result)} figures; "
          f"{len(result['missing'])} grid cell(s) missing or short of the protocol")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from metarl.experiments import analysis

    data = analysis.analyze_run(args.run_dir, args.checkpoint, args.out, args.steps, args.tasks, args.episodes,
                                snapshots=not args.no_snapshots, every=args.every,
                                snapshot_steps=args.snapshot_steps, figures=not args.no_figures)
    print(analysis.markdown(data))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from metarl import runs as run
    from metarl.experiments import report

    keep = args.keep_every or report.PUBLISHED_SNAPSHOT_EVERY
    if args.compact:
        if args.dest is not None:
            raise run.RunError(f"--compact works in place on ROOT; drop DEST ({args.dest!r})")
        changed = report.compact_published(args.root, keep)
        print(f"compacted {len(changed)} director{'y' if len(changed) == 1 else 'ies'} under {args.root}")
        return 0
    if args.dest is None:
        raise run.RunError("publish needs ROOT and DEST (or --compact ROOT)")
    given = [*(["--keep-every", str(args.keep_every)] if args.keep_every else []),
             *(["--unfinished"] if args.unfinished else [])]
    done = report.publish(args.root, args.dest, command=["publish", args.root, args.dest, *given], keep_every=keep,
                          unfinished=args.unfinished)
    print(f"published {len(done.copied)} {'' if args.unfinished else 'finished '}run(s) ({len(done.unchanged)} "
          "already there, left as they are) "
          f"and {done.baseline_files} baseline file(s) to {args.dest}")
    if done.recheck:
        print(f"re-check a number with: {done.recheck}")
    return 0


def cmd_branch(args: argparse.Namespace) -> int:
    from metarl.experiments.branch import branch_run
    from metarl.experiments.sweep import COMMANDS_FILE, record_command

    made = branch_run(args.source, args.at, args.out, parse_overrides(args.overrides))
    if (made.path.parent / COMMANDS_FILE).is_file():  # a branch into a sweep's root: part of its provenance
        record_command(made.path.parent, ["branch", args.source, "--at", str(args.at), "--out", args.out,
                                          *(["--set", *args.overrides] if args.overrides else [])])
    changes = ", ".join(f"{key} {a!r} -> {b!r}" for key, (a, b) in made.changed.items()) or "no setting changed"
    print(f"branched {made.source} at iteration {made.iteration} into {made.path} ({changes})\n"
          f"continue with: metarl train --resume {made.path}")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "envs": cmd_envs, "sweep": cmd_sweep, "report": cmd_report,
            "publish": cmd_publish, "branch": cmd_branch, "analyze": cmd_analyze}


def _one_line(message: str) -> str:
    """Fold a multi-line message (e.g. a list of config problems) into one line."""
    parts = [part.strip().removeprefix("- ") for part in str(message).splitlines() if part.strip()]
    return " ".join(parts[:1] + ["; ".join(parts[1:])]).strip()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `metarl` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from metarl.runs import RunDiverged, RunError

    try:
        return COMMANDS[args.command](args)
    except RunDiverged as exc:
        print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ConfigError, RunError) as exc:
        print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. the disk filled up mid-run: the checkpoint, written atomically, is intact
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"metarl: error: {where}{exc.strerror or exc}; the last checkpoint is intact", file=sys.stderr)
        return EXIT_OS
    except KeyboardInterrupt:
        print("\nmetarl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
