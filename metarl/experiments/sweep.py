"""A grid of (family, algorithm, seed) runs and its baselines, resumable over several sittings (`metarl sweep`).

Each cell is an ordinary run directory, ROOT/<env>-<algo>-seed<N>, meta-trained with the family's protocol preset
(plus --set) and then evaluated once more for the report (eval.json: EVAL_TASKS held-out tasks, returns after
0..EVAL_STEPS adaptation steps). Finished work is skipped and interrupted work continues, so the same call is
safe to repeat; stopping it (Ctrl-C, `kill PID`) saves a checkpoint. Besides the run directories, ROOT holds:

    commands.txt   each sweep/publish command that finished or was stopped cleanly, once, in order of last use
    baselines/     <env>-<kind>-seed<N>.json per baseline (metarl.experiments.baselines), plus each PPO model
                   (.zip, its actor .actor.pt, its facts .ppo.json; a published copy keeps the actor and facts)
    logs/          one log per run trained in a child process (jobs > 1)
    .locks/        one lock per cell, so that two sweeps sharing ROOT never train the same cell twice

and each run directory a timing.json: wall-clock seconds of every sitting, killed ones included.

jobs > 1 trains that many runs at a time in child processes (`python -m metarl.experiments.sweep cell ...`), each with
one simulator and one update thread (PARALLEL_OVERRIDES, unless --set says otherwise), so they share the cores without
oversubscribing them. BOOKKEEPING_KEYS change speed or disk use, not results, so a run may be resumed with other
values; any other --set must stay as the run was started (a mismatch is refused, naming the keys).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator, Sequence

from metarl import runs as run
from metarl.common import files
from metarl.common.files import write_json, write_text
from metarl.config import (
    ALGOS,
    BOOKKEEPING_KEYS,
    ConfigError,
    acting_settings,
    config_to_dict,
    load_config,
    parse_overrides,
)
from metarl.envs import has_test_split
from metarl.experiments import baselines
from metarl.experiments.baselines import BASELINE_KINDS, PPO_ENVS

ENVS = ("cheetah-dir", "cheetah-vel", "nav2d")
SEEDS = (0, 1, 2)
EVAL_TASKS = 40
EVAL_STEPS = 3
ENGINES = ("local", "ray")
PARALLEL_OVERRIDES = {"sampler_threads": 1, "update_threads": 1}
# Keys of the TRPO meta-update alone: a baseline is adapted and evaluated, never meta-trained, so its result stays
# valid when they change (the cheetah configs moved to fvp_subsample 1.0 after the baselines were computed at 0.2).
META_UPDATE_KEYS = ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack_ratio", "fvp_subsample",
                    "first_order")

# The sweep's own files (the run directories' are metarl.runs').
TIMING_FILE = "timing.json"
BRANCH_FILE = "branch.json"  # a run started from another's checkpoint (metarl.experiments.branch)
COMMANDS_FILE = "commands.txt"
BASELINES_DIR = "baselines"
LOGS_DIR = "logs"
LOCKS_DIR = ".locks"
PPO_MODEL_SUFFIX = ".zip"  # the whole SB3 model, kept where it was trained
PPO_ACTOR_SUFFIX = ".actor.pt"  # its actor as our policy's weights: what a baseline needs, and what is published
PPO_FACTS_SUFFIX = ".ppo.json"
EXIT_INTERRUPTED = 130


class SweepError(run.RunError):
    """An expected problem with a sweep (a run directory started with another protocol); printed as one line."""


# -- names, files, commands, locks --------------------------------------------------------------------------------

# The settings that name a variant's row, in the order a name lists them
VARIANT_KEYS = ("outer", "estimator", "inner_optimizer", "forward_velocity", "promp_max_kl")
PAPER = "paper"


def variant(cfg) -> str:
    """The variant of a config, which makes a row of its own beside the algorithm's: '' where its outer loop,
    estimator, inner rule and forward reward are those `metarl train --env ENV` trains (the family's preset);
    'paper' where they are the papers' protocol's, for a family whose default departs from it (cheetah-dir-paper);
    otherwise the settings that differ from the default, joined (on nav2d 'promp-lvc', 'lvc', 'promp-lvc-com';
    on cheetah-dir 'com', 'dice', 'kfo')."""
    default = run.family_default(cfg.env)
    differs = [key for key in VARIANT_KEYS if getattr(cfg, key) != getattr(default, key)]
    if not differs:
        return ""
    paper = run.paper_config_file(cfg.env)
    if paper and all(getattr(cfg, key) == getattr(load_config(paper), key) for key in VARIANT_KEYS):
        return PAPER
    return setting_names(cfg, differs)


def setting_names(cfg, keys) -> str:
    """The values of `keys` in `cfg` joined as a variant's name ('promp-lvc'); a null forward reward is named
    'displacement', the families' own; ProMP's trust region 'kl0.03' (none: 'nokl')."""
    return "-".join(_setting_name(key, getattr(cfg, key)) for key in keys)


def _setting_name(key: str, value) -> str:
    if key == "promp_max_kl":
        return "nokl" if value is None else f"kl{value:g}"
    return str(value or "displacement")


def run_name(env: str, algo: str, seed: int, kind: str = "") -> str:
    """Stable run directory name of a grid cell (no timestamp, so a re-run finds it); `kind` is its variant(); the
    family's name made safe for a folder (metaworld-ml1:reach: metaworld-ml1-reach)."""
    env = run.file_safe(env)
    return f"{env}-{algo}-{kind}-seed{seed}" if kind else f"{env}-{algo}-seed{seed}"


def paper_run_name(env: str, algo: str, seed: int) -> str:
    """The grid's run of the papers' protocol for a cell: ENV-ALGO-paper-seedN where the family's default departs
    from the papers (cheetah-dir), the default run ENV-ALGO-seedN elsewhere."""
    return run_name(env, algo, seed, PAPER if run.paper_config_file(env) else "")


def cell_name(env: str, algo: str, seed: int, overrides: dict) -> str:
    """The run directory name of a cell trained with --set `overrides` (the variant they select included)."""
    return run_name(env, algo, seed, variant(cell_config(env, algo, seed, overrides)))


def baseline_name(env: str, kind: str, seed: int) -> str:
    """Stable file name (without suffix) of a baseline's result in ROOT/baselines/."""
    return f"{env}-{kind}-seed{seed}"


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if the file is missing or unreadable."""
    try:
        return files.read_json(path)
    except (OSError, ValueError):
        return None


def command_line(argv: Sequence[str]) -> str:
    """The `metarl` command (argv without the program name) as a user types it."""
    return shlex.join(["metarl", *argv])


def recorded_commands(root: Path) -> list[str]:
    """The lines of ROOT/commands.txt, none if it does not exist."""
    path = Path(root) / COMMANDS_FILE
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def with_command_last(commands: list[str], argv: Sequence[str]) -> list[str]:
    """`commands` with this invocation moved (or added) to the end: each distinct command once, by last use."""
    line = command_line(argv)
    return [c for c in commands if c != line] + [line]


def record_command(root: Path, argv: Sequence[str]) -> None:
    """Record this invocation last in ROOT/commands.txt, for the report's provenance."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / COMMANDS_FILE, "".join(f"{c}\n" for c in with_command_last(recorded_commands(root), argv)))


@contextlib.contextmanager
def cell_lock(root: Path, name: str) -> Iterator[bool]:
    """Hold an exclusive lock on one grid cell; yields False if another process is working on it already."""
    import fcntl

    locks = root / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_iteration(run_dir: Path) -> int:
    """The last training iteration logged in the run's metrics (0 if none)."""
    records = run.read_metrics(run_dir)
    return max((r["iteration"] for r in records if "returns/post_adaptation" in r), default=0)


# -- one meta-training cell -----------------------------------------------------------------------------------------

def cell_config(env: str, algo: str, seed: int, overrides: dict):
    """The reference protocol of a cell: the family's preset < --set overrides < the cell's algo and seed."""
    return run.resolve_config(env, None, overrides, {"algo": algo, "seed": seed})


def grid_overrides(overrides: dict, jobs: int) -> dict:
    """--set overrides, plus one simulator and one update thread per run when runs share the cores (jobs > 1)."""
    if jobs <= 1:
        return dict(overrides)
    return {**PARALLEL_OVERRIDES, **overrides}


def config_differences(saved, requested, ignore: tuple[str, ...] = ()) -> list[str]:
    """Protocol keys on which a run's saved config and the requested one disagree (iterations, speed, `ignore` and
    the settings neither run uses aside: config.acting_settings)."""
    a, b = acting_settings(saved), acting_settings(requested)
    skip = {"iterations", *ignore}
    return [f"{key}: saved {a.get(key)!r}, requested {b.get(key)!r}" for key in {**a, **b}
            if a.get(key) != b.get(key) and key not in skip]


def open_existing_run(run_dir: Path, requested):
    """Load a started run for resuming, checking it was started with the requested protocol.

    Returns (cfg, ckpt): the saved config (its iterations raised to the requested total if larger) with this
    sitting's speed settings.
    """
    saved = load_config(run_dir / run.CONFIG_FILE)
    problems = config_differences(saved, requested)
    if problems:
        raise SweepError(f"{run_dir} was started with a different protocol ({'; '.join(problems)}); pass the "
                         f"--set values it was started with (see {run_dir.parent / COMMANDS_FILE}) or use "
                         "another --root")
    if requested.iterations < saved.iterations:
        raise SweepError(f"{run_dir} is set to {saved.iterations} iterations but {requested.iterations} were "
                         f"requested; pass --set iterations={saved.iterations} or use another --root")
    _, cfg, ckpt = run.prepare_resume(run_dir, requested.iterations)
    return dataclasses.replace(cfg, **speed_of(requested)), ckpt


def speed_of(cfg) -> dict:
    """A config's settings of speed and disk use (BOOKKEEPING_KEYS): what a sitting may set for a saved run."""
    return {key: getattr(cfg, key) for key in BOOKKEEPING_KEYS}


def has_started(run_dir: Path) -> bool:
    """A run has started once train() wrote its first checkpoint; a folder with only its config has not."""
    return (run_dir / run.CHECKPOINT_FILE).is_file()


def final_eval_needed(run_dir: Path, cfg, iteration: int, tasks: int, split: str = "test") -> bool:
    """True unless eval.json (eval-train.json for the training tasks) already holds the final evaluation of this
    checkpoint with the report's protocol."""
    data = read_json(run.default_eval_path(run_dir, split=split))
    return not (data and data.get("iteration") == iteration and data.get("tasks") == tasks
                and data.get("steps") == EVAL_STEPS and data.get("episodes") == cfg.eval_episodes_per_task)


class Sitting:
    """One sitting of work on a run, recorded in RUN_DIR/timing.json, which accumulates wall seconds across sittings.

    The record (seconds and the last iteration logged) is written when the sitting starts, every HEARTBEAT_S
    seconds while it runs (a background thread) and when it ends, so a process killed without warning (SIGKILL,
    a closed session) loses under a minute of it.
    """

    HEARTBEAT_S = 60.0

    def __init__(self, run_dir: Path, jobs: int, from_iteration: int):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / TIMING_FILE
        self.timing = read_json(self.path) or {"sittings": []}
        self.record = {"started": dt.datetime.now().isoformat(timespec="seconds"), "jobs": jobs,
                       "cpu_count": os.cpu_count(), "from_iteration": from_iteration, "to_iteration": from_iteration,
                       "train_s": 0.0, "eval_s": 0.0, "ended": False}
        self.timing["sittings"].append(self.record)
        self.running: tuple[str, float] | None = None  # (phase key, start time) of the phase under way
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._heartbeat, daemon=True)

    def __enter__(self) -> "Sitting":
        self.save()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.record["ended"] = True
        self.save()

    @contextlib.contextmanager
    def phase(self, key: str) -> Iterator[None]:
        """Time a phase ("train_s" or "eval_s"); its seconds count even if it raises (Ctrl-C, SIGTERM)."""
        self.running = (key, time.perf_counter())
        try:
            yield
        finally:
            with self.lock:
                self.record[key] += time.perf_counter() - self.running[1]
                self.running = None
            self.save()

    def save(self) -> None:
        """Write timing.json with this sitting's seconds and iterations so far and the totals over all sittings."""
        to_iteration = max(self.record["from_iteration"], last_iteration(self.run_dir))
        with self.lock:
            self.record["to_iteration"] = to_iteration
            record = dict(self.record)
            if self.running is not None:
                key, start = self.running
                record[key] += time.perf_counter() - start
            sittings = self.timing["sittings"][:-1] + [record]
            totals = {key: sum(s[key] for s in sittings) for key in ("train_s", "eval_s")}
            write_json(self.path, {**totals, "wall_s": totals["train_s"] + totals["eval_s"], "sittings": sittings})

    def _heartbeat(self) -> None:
        while not self.stop.wait(self.HEARTBEAT_S):
            self.save()


def train_cell(root: Path, env: str, algo: str, seed: int, overrides: dict, jobs: int, eval_tasks: int) -> str:
    """Bring one grid cell to completion: start, resume or skip it, then write its final evaluation.

    Training goes through metarl.runs (create_run / prepare_resume / train / evaluate_run), so the folder is an
    ordinary run directory. Returns a one-line status; raises metarl.runs.Interrupted when stopped.
    """
    requested = cell_config(env, algo, seed, grid_overrides(overrides, jobs))
    name = run_name(env, algo, seed, variant(requested))
    run_dir = root / name
    with cell_lock(root, name) as locked:
        if not locked:
            return f"{name}: skipped, another process is working on it"
        if has_started(run_dir):
            cfg, ckpt = open_existing_run(run_dir, requested)
        else:
            cfg, ckpt = requested, None
            run.create_run(cfg, run_dir)
        done = 0 if ckpt is None else run.checkpoint_iteration(ckpt)
        must_train = ckpt is None or not run.is_complete(cfg, ckpt)
        # families with held-out tasks of their own (Meta-World) are evaluated on their training tasks too
        splits = ("test", "train") if has_test_split(env) else ("test",)
        if not must_train and not any(final_eval_needed(run_dir, cfg, done, eval_tasks, s) for s in splits):
            return f"{name}: already trained ({done}/{cfg.iterations} iterations) and evaluated"
        status = f"{name}: already trained ({done}/{cfg.iterations} iterations)"
        with Sitting(run_dir, jobs, done) as sitting:
            if must_train:
                where = "starting" if ckpt is None else f"resuming at iteration {done + 1}"
                print(f"== {name}: {where} of {cfg.iterations}", flush=True)
                with sitting.phase("train_s"):
                    run.train(run_dir, cfg, ckpt)
                status = f"{name}: trained to {cfg.iterations} iterations"
            iteration = run.checkpoint_iteration(run.load_run(run_dir)[2])
            for split in splits:
                if final_eval_needed(run_dir, cfg, iteration, eval_tasks, split):
                    which = "held-out" if split == "test" else "training"
                    print(f"== {name}: final evaluation ({eval_tasks} {which} tasks, {EVAL_STEPS} steps)", flush=True)
                    with sitting.phase("eval_s"):
                        run.evaluate_run(run_dir, tasks=eval_tasks, steps=EVAL_STEPS,
                                         episodes=cfg.eval_episodes_per_task, speed=speed_of(cfg), split=split)
                    status += ", evaluated" if split == "test" else " (and on its training tasks)"
    return status


# -- the grid: one cell after another, or N at a time in child processes -------------------------------------------

def grid_cells(envs: Sequence[str], algos: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, str, int]]:
    """The cells in launch order: env by env (cheap nav2d first if asked for), then seed, then algorithm."""
    return [(env, algo, seed) for env in envs for seed in seeds for algo in algos]


def report_failures(failures: list[str], success: str = "all requested runs are trained and evaluated") -> int:
    """Print the end of a grid: which cells failed (exit code 1), or `success` (exit code 0)."""
    if failures:
        print(f"{len(failures)} cell(s) failed: {', '.join(failures)}; see the messages above (or ROOT/{LOGS_DIR}/)",
              file=sys.stderr)
        return 1
    print(success, flush=True)
    return 0


def run_sequential(root: Path, cells, overrides: dict, eval_tasks: int) -> int:
    """Train the cells one after another in this process; a failing cell is reported and the next one goes on."""
    failures = []
    for env, algo, seed in cells:
        try:
            print(train_cell(root, env, algo, seed, overrides, 1, eval_tasks), flush=True)
        except run.Interrupted as stop:
            print(f"\ninterrupted: checkpoint of iteration {stop.iteration} saved in {stop.run_dir}; run the same "
                  "command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        except run.RunError as exc:
            failures.append(cell_name(env, algo, seed, overrides))
            print(f"{failures[-1]}: error: {exc}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001  (an unattended grid must go on to the next cell)
            failures.append(cell_name(env, algo, seed, overrides))
            traceback.print_exc()
    return report_failures(failures)


def cell_command(root: Path, env: str, algo: str, seed: int, jobs: int, eval_tasks: int,
                 overrides: Sequence[str]) -> list[str]:
    """The hidden `python -m metarl.experiments.sweep cell` command: trains one cell in a child process (jobs > 1)."""
    cmd = [sys.executable, "-m", "metarl.experiments.sweep", "cell", "--root", str(Path(root).resolve()), "--env", env,
           "--algo", algo, "--seed", str(seed), "--jobs", str(jobs), "--eval-tasks", str(eval_tasks)]
    return cmd + (["--set", *overrides] if overrides else [])


def run_parallel(root: Path, cells, overrides: Sequence[str], jobs: int, eval_tasks: int) -> int:
    """Train up to `jobs` cells at a time in child processes, each logging to ROOT/logs/<run>.log.

    On Ctrl-C or SIGTERM the children are sent SIGTERM (they save a checkpoint) and waited for.
    """
    logs = root / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failures = list(cells), {}, []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                env, algo, seed = pending.pop(0)
                name = cell_name(env, algo, seed, parse_overrides(list(overrides)))
                log = open(logs / f"{name}.log", "a", encoding="utf-8")
                # A new session: a terminal's Ctrl-C reaches only us, and we stop the children one by one.
                proc = subprocess.Popen(cell_command(root, env, algo, seed, jobs, eval_tasks, overrides), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                running[name] = (proc, log)
                print(f"== {name}: started in process {proc.pid}, log {logs / f'{name}.log'}", flush=True)
            time.sleep(1.0)
            for name, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[name]
                    print(f"== {name}: finished with exit code {proc.returncode}", flush=True)
                    if proc.returncode != 0:
                        failures.append(name)
    except KeyboardInterrupt:
        for name, (proc, log) in running.items():
            proc.send_signal(signal.SIGTERM)
        for name, (proc, log) in running.items():
            proc.wait()
            log.close()
        print("\ninterrupted: the running runs saved checkpoints; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return report_failures(failures)


def run_grid(root: Path, envs: Sequence[str], algos: Sequence[str], seeds: Sequence[int],
             overrides: Sequence[str] = (), jobs: int = 1, eval_tasks: int = EVAL_TASKS, engine: str = "local",
             cpus_per_run: int = 1, ray_address: str | None = None) -> int:
    """Meta-train and evaluate every (env, algo, seed) cell under ROOT; returns 0, 1 (a cell failed) or 130.

    `overrides` are --set KEY=VALUE strings (they travel to the child processes as typed). `engine` "ray" hands
    the cells to a Ray cluster instead, `cpus_per_run` CPUs each (metarl.experiments.sweep_ray).
    """
    parsed = parse_overrides(list(overrides))
    cells = grid_cells(envs, algos, seeds)
    for env in envs:  # check each env's config before launching anything
        cell_config(env, algos[0], seeds[0], grid_overrides(parsed, jobs))
    print(f"{len(cells)} runs under {root}: {', '.join(cell_name(*c, parsed) for c in cells)}", flush=True)
    with run.sigterm_as_interrupt():
        if engine == "ray":
            from metarl.experiments.sweep_ray import run_ray

            return run_ray(root, cells, parsed, eval_tasks, cpus_per_run, ray_address)
        if jobs <= 1:
            return run_sequential(root, cells, parsed, eval_tasks)
        return run_parallel(root, cells, overrides, jobs, eval_tasks)


def run_cell(root: Path, env: str, algo: str, seed: int, overrides: Sequence[str], jobs: int, eval_tasks: int) -> int:
    """One cell in a child process of a parallel sweep; returns 0, or 130 when stopped."""
    with run.sigterm_as_interrupt():
        try:
            print(train_cell(root, env, algo, seed, parse_overrides(list(overrides)), jobs, eval_tasks), flush=True)
        except run.Interrupted as stop:
            print(f"interrupted: checkpoint of iteration {stop.iteration} saved", flush=True)
            return EXIT_INTERRUPTED
    return 0


# -- baselines ------------------------------------------------------------------------------------------------------

def same_protocol(saved: dict | None, cfg) -> bool:
    """True if a saved config dict matches cfg on every key that changes a baseline's result (not iterations, not
    the meta-update's)."""
    if not isinstance(saved, dict):
        return False
    try:
        return not config_differences(load_config(None, saved), cfg, ignore=META_UPDATE_KEYS)
    except Exception:  # noqa: BLE001  (an unreadable or outdated saved config: recompute)
        return False


def pretrained_state(cfg, root: Path, seed: int, steps: int, n_envs: int) -> tuple[dict, dict]:
    """PPO's actor as our policy's weights, and the PPO facts: from the model kept in ROOT/baselines/ if it was
    trained with this budget and protocol, else from a new one trained and kept there."""
    stem = root / BASELINES_DIR / baseline_name(cfg.env, "pretrained", seed)
    path, actor = stem.with_name(stem.name + PPO_MODEL_SUFFIX), stem.with_name(stem.name + PPO_ACTOR_SUFFIX)
    facts_path = stem.with_name(stem.name + PPO_FACTS_SUFFIX)
    facts = read_json(facts_path)
    same = facts and facts.get("steps") == steps and facts.get("n_envs") == n_envs \
        and same_protocol(facts.get("config"), cfg)
    if same and path.is_file():
        return baselines.ppo_policy_state(baselines.load_ppo(path), cfg), facts
    if same and actor.is_file():  # a published baseline keeps the actor alone (metarl.experiments.publish)
        return baselines.load_actor(actor), facts
    model, facts = baselines.train_ppo(cfg, seed, steps, n_envs)
    model.save(path)
    state = baselines.ppo_policy_state(model, cfg)
    baselines.save_actor(state, actor)
    write_json(facts_path, facts)
    return state, facts


def baseline_cell(root: Path, env: str, kind: str, seed: int, overrides: dict, ppo_steps: int, n_envs: int,
                  tasks: int) -> str:
    """Compute one baseline result (skipped if its JSON already holds it with the same protocol)."""
    name = baseline_name(env, kind, seed)
    out = root / BASELINES_DIR / f"{name}.json"
    # Baselines adapt every parameter, as the MAML paper fine-tuned its pretrained policy: algo "maml".
    cfg = cell_config(env, "maml", seed, overrides)
    old = read_json(out) or {}
    same_ppo = kind != "pretrained" or (old.get("ppo") or {}).get("steps") == ppo_steps
    if old.get("tasks") == tasks and same_protocol(old.get("config"), cfg) and same_ppo:
        return f"{name}: already done"
    (root / BASELINES_DIR).mkdir(parents=True, exist_ok=True)
    with cell_lock(root, name) as locked:
        if not locked:
            return f"{name}: skipped, another process is working on it"
        ppo = state = None
        if kind == "pretrained":
            state, ppo = pretrained_state(cfg, root, seed, ppo_steps, n_envs)
        start = time.perf_counter()
        print(f"== {name}: adapting on {tasks} held-out tasks", flush=True)
        returns, horizon = baselines.adapt_and_evaluate(cfg, state, tasks, EVAL_STEPS)
        eval_s = time.perf_counter() - start
        train_s = ppo["train_s"] if ppo else 0.0
        write_json(out, {"env": env, "kind": kind, "seed": seed, "adapted": "all parameters (MAML-style)",
                         "horizon": horizon, "tasks": tasks, "steps": EVAL_STEPS,
                         "episodes": cfg.eval_episodes_per_task, "eval_seed": cfg.eval_seed, "returns": returns,
                         "ppo": ppo, "eval_s": eval_s, "wall_s": train_s + eval_s, "config": config_to_dict(cfg)})
    return f"{name}: done"


def run_baselines(root: Path, envs: Sequence[str], seeds: Sequence[int], kinds: Sequence[str] = BASELINE_KINDS,
                  overrides: Sequence[str] = (), ppo_steps: int | None = None, ppo_envs: int = PPO_ENVS,
                  eval_tasks: int = EVAL_TASKS) -> int:
    """Compute every (env, seed, kind) baseline under ROOT/baselines/; returns 0, 1 (one failed) or 130."""
    parsed = parse_overrides(list(overrides))
    failures = []
    with run.sigterm_as_interrupt():
        for env in envs:
            for seed in seeds:
                for kind in kinds:
                    steps = ppo_steps or baselines.default_ppo_steps(env)
                    try:
                        print(baseline_cell(root, env, kind, seed, parsed, steps, ppo_envs, eval_tasks), flush=True)
                    except KeyboardInterrupt:
                        print("\ninterrupted: finished baselines are kept; run the same command again to go on",
                              file=sys.stderr)
                        return EXIT_INTERRUPTED
                    except Exception:  # noqa: BLE001  (go on with the next baseline)
                        failures.append(baseline_name(env, kind, seed))
                        traceback.print_exc()
    return report_failures(failures, "all requested baselines are evaluated")


# -- the whole sweep ------------------------------------------------------------------------------------------------

def check_choices(what: str, given: Sequence, allowed: Sequence) -> None:
    """SweepError naming the unknown values of `given` and the allowed ones."""
    unknown = [str(v) for v in given if v not in allowed]
    if unknown:
        raise SweepError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(map(str, allowed))}")


def sweep(root: str | os.PathLike, envs: Sequence[str] = ENVS, algos: Sequence[str] = ALGOS,
          seeds: Sequence[int] = SEEDS, overrides: Sequence[str] = (), jobs: int = 1, eval_tasks: int = EVAL_TASKS,
          baseline_kinds: Sequence[str] = (), only_baselines: bool = False, ppo_steps: int | None = None,
          ppo_envs: int = PPO_ENVS, command: Sequence[str] | None = None, engine: str = "local",
          cpus_per_run: int = 1, ray_address: str | None = None) -> int:
    """Meta-train and evaluate the grid under ROOT (unless only_baselines), then compute `baseline_kinds` (every
    kind if only_baselines names none). Resumable: the same call continues or skips finished work.

    `command`: the argv (without `metarl`) recorded in ROOT/commands.txt when the sweep finishes or stops
    cleanly. `engine`: "local" (this machine, `jobs` at a time) or "ray" (a Ray cluster, metarl.experiments.sweep_ray).
    Returns 0, 1 (a cell failed; the others went on) or 130 (stopped; checkpoints saved).
    """
    root = Path(root)
    if engine not in ENGINES:
        raise SweepError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    for name, value in (("jobs", jobs), ("eval-tasks", eval_tasks), ("ppo-envs", ppo_envs), ("ppo-steps", ppo_steps),
                        ("cpus-per-run", cpus_per_run)):
        if value is not None and value < 1:
            raise SweepError(f"--{name} must be >= 1, got {value}")
    check_choices("algorithm(s)", algos, ALGOS)
    check_choices("baseline(s)", baseline_kinds, BASELINE_KINDS)
    envs = [run.check_env(env) for env in envs]
    kinds = list(baseline_kinds) or (list(BASELINE_KINDS) if only_baselines else [])
    code = 0
    if not only_baselines:
        code = run_grid(root, envs, list(algos), list(seeds), overrides, jobs, eval_tasks, engine, cpus_per_run,
                        ray_address)
    if kinds and code != EXIT_INTERRUPTED:
        code = max(code, run_baselines(root, envs, list(seeds), kinds, overrides, ppo_steps, ppo_envs, eval_tasks))
    if command is not None and code in (0, EXIT_INTERRUPTED):
        record_command(root, command)
    return code


# -- `python -m metarl.experiments.sweep cell`: one cell in a child process ---------------------------------------

def main(argv: list[str] | None = None) -> int:
    """The hidden worker of a parallel sweep:
    `python -m metarl.experiments.sweep cell --root ROOT --env E --algo A --seed N`."""
    parser = argparse.ArgumentParser(prog="python -m metarl.experiments.sweep", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cell", help="train and evaluate one grid cell (spawned by `metarl sweep --jobs N`)")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--algo", required=True, choices=ALGOS)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--eval-tasks", type=int, default=EVAL_TASKS)
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides")
    args = parser.parse_args(argv)
    try:
        return run_cell(args.root, run.check_env(args.env), args.algo, args.seed, args.overrides, args.jobs,
                        args.eval_tasks)
    except (run.RunError, ConfigError) as exc:
        print(f"metarl sweep cell: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmetarl sweep cell: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
