"""Reproduce the ANIL paper's RL table (Raghu et al. 2020, Table 2) with metarl, resumably, over several sittings.

Four subcommands, each safe to re-run (finished work is skipped, interrupted work continues):

    run        meta-train the grid of (env, algo, seed) with the reference protocol (configs/<env>.yaml), one
               ordinary metarl run directory each, ROOT/<env>-<algo>-seed<N>; then write each run's final
               held-out evaluation (eval.json: 40 tasks, returns after 0..3 adaptation steps)
    baselines  the same held-out evaluation for (a) a freshly initialised policy and (b) a stable-baselines3 PPO
               policy pre-trained on the mixture of tasks, both adapted exactly like the meta-trained policies;
               results in ROOT/baselines/<env>-<kind>-seed<N>.json (plus the PPO model .zip)
    aggregate  read every run directory and baseline result under ROOT and write reproduction.md (table beside
               the papers' numbers, protocol, wall-clock times, what is missing), reproduction.json and plots
    publish    copy each finished run's checkpoint, kept snapshots, config, metrics and eval.json (and the baseline
               results) to a folder that can be committed, so that `metarl eval <copy>` re-checks any number

Launch the long part with nohup; stopping it (kill PID, Ctrl-C) saves a checkpoint, and the same command resumes:

    nohup python benchmarks/reproduce.py run --root runs/reproduction > runs/reproduction.log 2>&1 &
    python benchmarks/reproduce.py baselines --root runs/reproduction
    python benchmarks/reproduce.py aggregate --root runs/reproduction --out benchmarks/results/reproduction
    python benchmarks/reproduce.py publish --root runs/reproduction --dest benchmarks/results/runs

`run --jobs 2` trains two runs at a time in child processes (logs in ROOT/logs/) and gives each run one simulator
thread and one update thread (`--set sampler_threads=1 update_threads=1`, unless you --set them yourself), so two
runs share a 2-core machine without oversubscribing it. On a machine busy with other work, `--set update_threads=1`
also helps a single run (two torch threads fighting for a core slow the update down several times). The thread
settings, task_chunk, checkpoint_every and keep_checkpoint_every change speed or disk use, not results (up to float
rounding), so a run may be resumed with other values; any other --set must stay as the run was started (a mismatch
is refused, naming the keys).

Each run/baselines/publish command that finishes or is stopped cleanly is recorded in ROOT/commands.txt, which
`aggregate` prints at the top of the report as the commands behind the numbers. A command given again moves to the
end, so the list keeps the order of each command's last invocation (a run resumed after a publish comes before it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import filecmp
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator

import numpy as np

from metarl.files import write_json, write_text

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "benchmarks/reproduce.py"

ENVS = ("cheetah-dir", "cheetah-vel", "nav2d")
ALGOS = ("anil", "maml")
SEEDS = (0, 1, 2)
BASELINE_KINDS = ("random-init", "pretrained")
EVAL_TASKS = 40
EVAL_STEPS = 3
# Keys that change speed, not results: a resumed run may use other values than it started with.
BOOKKEEPING_KEYS = ("sampler_threads", "torch_threads", "update_threads", "task_chunk", "checkpoint_every",
                    "keep_checkpoint_every")
PARALLEL_OVERRIDES = {"sampler_threads": 1, "update_threads": 1}
# Keys of the TRPO meta-update alone: a baseline is adapted and evaluated, never meta-trained, so its result stays
# valid when they change (the cheetah configs moved to fvp_subsample 1.0 after the baselines were computed at 0.2).
META_UPDATE_KEYS = ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack_ratio", "fvp_subsample",
                    "first_order")
PPO_STEPS = {"cheetah-dir": 1_000_000, "cheetah-vel": 1_000_000, "nav2d": 200_000}
PPO_STEPS_OTHER = 1_000_000
PPO_ENVS = 4
PPO_N_STEPS, PPO_BATCH = 2048, 64  # stable-baselines3's defaults, shrunk only for budgets too small for them

TIMING_FILE = "timing.json"
COMMANDS_FILE = "commands.txt"
BASELINES_DIR = "baselines"
LOGS_DIR = "logs"
LOCKS_DIR = ".locks"
PUBLISHED_FILES = ("checkpoint.pt", "config.yaml", "metrics.jsonl", "eval.json", TIMING_FILE)

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


class ReproduceError(Exception):
    """An expected problem (bad arguments, a run directory that does not fit the request); printed as one line."""


# ================================================================================================================
# Small helpers: names, files, commands, locks
# ================================================================================================================

def run_name(env: str, algo: str, seed: int) -> str:
    """Stable run directory name of a grid cell (no timestamp, so a re-run finds it)."""
    return f"{env}-{algo}-seed{seed}"


def baseline_name(env: str, kind: str, seed: int) -> str:
    return f"{env}-{kind}-seed{seed}"


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if the file is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def command_line(argv: list[str]) -> str:
    """The command as a user would type it from the repository root."""
    return shlex.join(["python", SCRIPT, *argv])


def recorded_commands(root: Path) -> list[str]:
    """The lines of ROOT/commands.txt, none if it does not exist."""
    path = root / COMMANDS_FILE
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def with_command_last(commands: list[str], argv: list[str]) -> list[str]:
    """`commands` with this invocation moved (or added) to the end: each distinct command once, by last use."""
    line = command_line(argv)
    return [c for c in commands if c != line] + [line]


def record_command(root: Path, argv: list[str]) -> None:
    """Record this invocation last in ROOT/commands.txt, for the report's provenance."""
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / COMMANDS_FILE, "".join(f"{c}\n" for c in with_command_last(recorded_commands(root), argv)))


@contextlib.contextmanager
def cell_lock(root: Path, name: str) -> Iterator[bool]:
    """Hold an exclusive lock on one grid cell; yields False if another process is working on it already.

    Lets two `reproduce.py` processes share a root without training the same run twice.
    """
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


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (`kill PID` on a nohup job) stops the grid like Ctrl-C: the current run saves a checkpoint."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def last_iteration(metrics_path: Path) -> int:
    """The last training iteration logged in metrics.jsonl (0 if none)."""
    records = read_metrics(metrics_path)
    return max((r["iteration"] for r in records if "returns/post_adaptation" in r), default=0)


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl at `path` as a list of dicts (metarl.run's reader: lines cut short by a crash are skipped)."""
    from metarl.run import read_metrics as read_run_metrics

    return read_run_metrics(path.parent)


# ================================================================================================================
# run: meta-train the grid
# ================================================================================================================

def cell_config(env: str, algo: str, seed: int, overrides: dict):
    """The reference protocol of a cell: configs/<env>.yaml < --set overrides < the cell's algo and seed."""
    from metarl.run import resolve_config

    return resolve_config(env, None, overrides, {"algo": algo, "seed": seed})


def grid_overrides(overrides: dict, jobs: int) -> dict:
    """--set overrides, plus one simulator and one update thread per run when runs share the cores (--jobs > 1)."""
    if jobs <= 1:
        return dict(overrides)
    return {**PARALLEL_OVERRIDES, **overrides}


def config_differences(saved, requested, ignore: tuple[str, ...] = ()) -> list[str]:
    """Protocol keys on which a run's saved config and the requested one disagree (iterations, speed and `ignore`
    aside)."""
    from metarl.config import config_to_dict

    a, b = config_to_dict(saved), config_to_dict(requested)
    skip = {*BOOKKEEPING_KEYS, "iterations", *ignore}
    return [f"{key}: saved {a[key]!r}, requested {b[key]!r}" for key in a
            if a.get(key) != b.get(key) and key not in skip]


def open_existing_run(run_dir: Path, requested):
    """Load a started run for resuming, checking it was started with the requested protocol.

    Returns (cfg, ckpt): cfg is the saved config (its iterations raised to the requested total if larger) with
    this sitting's speed settings.
    """
    from metarl.config import load_config
    from metarl.run import CONFIG_FILE, prepare_resume

    saved = load_config(run_dir / CONFIG_FILE)
    problems = config_differences(saved, requested)
    if problems:
        raise ReproduceError(f"{run_dir} was started with a different protocol ({'; '.join(problems)}); pass the "
                             f"--set values it was started with (see {run_dir.parent / COMMANDS_FILE}) or use "
                             "another --root")
    if requested.iterations < saved.iterations:
        raise ReproduceError(f"{run_dir} is set to {saved.iterations} iterations but {requested.iterations} were "
                             f"requested; pass --set iterations={saved.iterations} or use another --root")
    _, cfg, ckpt = prepare_resume(run_dir, requested.iterations)
    speed = {key: getattr(requested, key) for key in BOOKKEEPING_KEYS}
    return dataclasses.replace(cfg, **speed), ckpt


def has_started(run_dir: Path) -> bool:
    """A run has started once train() wrote its first checkpoint; a folder with only config.yaml has not."""
    from metarl.run import CHECKPOINT_FILE

    return (run_dir / CHECKPOINT_FILE).is_file()


def final_eval_needed(run_dir: Path, cfg, iteration: int, tasks: int) -> bool:
    """True unless eval.json already holds the final evaluation of this checkpoint with the report's protocol."""
    from metarl.run import EVAL_FILE

    data = read_json(run_dir / EVAL_FILE)
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
        self.path = run_dir / TIMING_FILE
        self.metrics = run_dir / "metrics.jsonl"
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
        to_iteration = max(self.record["from_iteration"], last_iteration(self.metrics))
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

    Training goes through metarl.run (create_run / prepare_resume / train / evaluate_run), so the folder is an
    ordinary run directory. Wall-clock seconds go to timing.json (see Sitting), interrupted sittings included.
    Returns a one-line status; raises metarl.run.Interrupted when stopped.
    """
    from metarl import run

    name = run_name(env, algo, seed)
    run_dir = root / name
    requested = cell_config(env, algo, seed, grid_overrides(overrides, jobs))
    with cell_lock(root, name) as locked:
        if not locked:
            return f"{name}: skipped, another process is working on it"
        if has_started(run_dir):
            cfg, ckpt = open_existing_run(run_dir, requested)
        else:
            cfg, ckpt = requested, None
            run.create_run(cfg, run_dir)
        done = 0 if ckpt is None else int(ckpt["trainer"]["iteration"])
        must_train = ckpt is None or not run.is_complete(cfg, ckpt)
        if not must_train and not final_eval_needed(run_dir, cfg, done, eval_tasks):
            return f"{name}: already trained ({done}/{cfg.iterations} iterations) and evaluated"
        status = f"{name}: already trained ({done}/{cfg.iterations} iterations)"
        with Sitting(run_dir, jobs, done) as sitting:
            if must_train:
                where = "starting" if ckpt is None else f"resuming at iteration {done + 1}"
                print(f"== {name}: {where} of {cfg.iterations}", flush=True)
                with sitting.phase("train_s"):
                    run.train(run_dir, cfg, ckpt)
                status = f"{name}: trained to {cfg.iterations} iterations"
            iteration = int(run.load_run(run_dir)[2]["trainer"]["iteration"])
            if final_eval_needed(run_dir, cfg, iteration, eval_tasks):
                print(f"== {name}: final evaluation ({eval_tasks} held-out tasks, {EVAL_STEPS} steps)", flush=True)
                with sitting.phase("eval_s"):
                    run.evaluate_run(run_dir, tasks=eval_tasks, steps=EVAL_STEPS, episodes=cfg.eval_episodes_per_task)
                status += ", evaluated"
    return status


def grid_cells(envs: list[str], algos: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """The cells in launch order: env by env (cheap nav2d first if asked for), then seed, then algorithm."""
    return [(env, algo, seed) for env in envs for seed in seeds for algo in algos]


def run_sequential(root: Path, cells, overrides: dict, eval_tasks: int) -> int:
    """Train the cells one after another in this process; a failing cell is reported and the next one goes on."""
    from metarl.run import Interrupted, RunError

    failures = []
    for env, algo, seed in cells:
        try:
            print(train_cell(root, env, algo, seed, overrides, 1, eval_tasks), flush=True)
        except Interrupted as stop:
            print(f"\ninterrupted: checkpoint of iteration {stop.iteration} saved in {stop.run_dir}; run the same "
                  "command again to resume", file=sys.stderr)
            return 130
        except (RunError, ReproduceError) as exc:
            failures.append(run_name(env, algo, seed))
            print(f"{run_name(env, algo, seed)}: error: {exc}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001  (an unattended grid must go on to the next cell)
            failures.append(run_name(env, algo, seed))
            traceback.print_exc()
    return report_failures(failures)


def report_failures(failures: list[str], success: str = "all requested runs are trained and evaluated") -> int:
    """Print the end of a grid: which cells failed (exit code 1), or `success` (exit code 0)."""
    if failures:
        print(f"{len(failures)} cell(s) failed: {', '.join(failures)}; see the messages above (or ROOT/logs/)",
              file=sys.stderr)
        return 1
    print(success, flush=True)
    return 0


def cell_command(args: argparse.Namespace, env: str, algo: str, seed: int) -> list[str]:
    """The hidden `_cell` command that trains one cell in a child process (used by --jobs > 1)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_cell", "--root", str(args.root.resolve()), "--env", env,
           "--algo", algo, "--seed", str(seed), "--jobs", str(args.jobs), "--eval-tasks", str(args.eval_tasks)]
    return cmd + (["--set", *args.overrides] if args.overrides else [])


def run_parallel(args: argparse.Namespace, cells) -> int:
    """Train up to --jobs cells at a time in child processes, each logging to ROOT/logs/<run>.log.

    On Ctrl-C or SIGTERM the children are sent SIGTERM (they save a checkpoint) and waited for.
    """
    logs = args.root / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failures = list(cells), {}, []
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                env, algo, seed = pending.pop(0)
                name = run_name(env, algo, seed)
                log = open(logs / f"{name}.log", "a", encoding="utf-8")
                # A new session: a terminal's Ctrl-C reaches only us, and we stop the children one by one.
                proc = subprocess.Popen(cell_command(args, env, algo, seed), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
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
        return 130
    return report_failures(failures)


def cmd_run(args: argparse.Namespace) -> int:
    from metarl.config import parse_overrides

    overrides = parse_overrides(args.overrides)
    cells = grid_cells(args.envs, args.algos, args.seeds)
    for env in args.envs:  # check each env's config before launching anything
        cell_config(env, args.algos[0], args.seeds[0], grid_overrides(overrides, args.jobs))
    print(f"{len(cells)} runs under {args.root}: {', '.join(run_name(*c) for c in cells)}", flush=True)
    with sigterm_as_keyboard_interrupt():
        if args.jobs <= 1:
            return run_sequential(args.root, cells, overrides, args.eval_tasks)
        return run_parallel(args, cells)


def cmd_cell(args: argparse.Namespace) -> int:
    """One cell in a child process of `run --jobs N`."""
    from metarl.config import parse_overrides
    from metarl.run import Interrupted

    with sigterm_as_keyboard_interrupt():
        try:
            print(train_cell(args.root, args.env, args.algo, args.seed, parse_overrides(args.overrides),
                             args.jobs, args.eval_tasks), flush=True)
        except Interrupted as stop:
            print(f"interrupted: checkpoint of iteration {stop.iteration} saved", flush=True)
            return 130
    return 0


# ================================================================================================================
# baselines: random init and PPO pre-trained on the task mixture, adapted like the meta-trained policies
# ================================================================================================================

def task_mixture_env(env_name: str, horizon: int, rng: np.random.Generator, **env_kwargs):
    """A single env of the family that draws a new random task from `rng` at every reset.

    Its observation does not reveal the task, so PPO learns one policy for the whole distribution: the
    "pretrained" baseline of the MAML paper (trained on all tasks, then fine-tuned by policy gradient).
    """
    import gymnasium

    from metarl.envs import make

    class TaskMixture(gymnasium.Wrapper):
        def reset(self, *, seed=None, options=None):
            task = self.env.unwrapped.sample_tasks(rng, 1)[0]
            return self.env.reset(seed=seed, options={**(options or {}), "task": task})

    return TaskMixture(make(env_name, max_episode_steps=horizon, **env_kwargs))


def ppo_policy_kwargs(cfg) -> dict:
    """An SB3 actor with our architecture: hidden ReLU layers of cfg.hidden_sizes, state-independent log-std."""
    import torch

    sizes = list(cfg.hidden_sizes)
    return dict(net_arch=dict(pi=sizes, vf=sizes), activation_fn=torch.nn.ReLU, log_std_init=cfg.init_log_std)


def ppo_model(cfg, seed: int, steps: int, n_envs: int):
    """An untrained SB3 PPO on `n_envs` task-mixture envs (task streams and PPO seeded by `seed`).

    SB3's default hyper-parameters, except that n_steps and batch_size shrink for budgets below one default
    rollout (only tiny smoke tests); gamma is the config's (0.99, SB3's default too).
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from metarl.config import env_kwargs
    from metarl.envs import get_family

    horizon = cfg.horizon or get_family(cfg.env).horizon
    streams = np.random.SeedSequence(seed).spawn(n_envs)
    makers = [lambda s=s: Monitor(task_mixture_env(cfg.env, horizon, np.random.default_rng(s), **env_kwargs(cfg)))
              for s in streams]
    n_steps = max(8, min(PPO_N_STEPS, steps // n_envs))
    batch = min(PPO_BATCH, n_steps * n_envs)
    return PPO("MlpPolicy", DummyVecEnv(makers), n_steps=n_steps, batch_size=batch, gamma=cfg.gamma,
               policy_kwargs=ppo_policy_kwargs(cfg), seed=seed, device="cpu", verbose=0)


def ppo_training_return(model) -> float | None:
    """Mean return of PPO's last training episodes (SB3 keeps the last 100), None before the first one ends."""
    episodes = [info["r"] for info in model.ep_info_buffer]
    return float(np.mean(episodes)) if episodes else None


def ppo_progress(total: int, reports: int = 10):
    """An SB3 callback that prints PPO's progress about `reports` times over `total` env steps: steps done, the mean
    return of the last 100 training episodes and steps/s (a 1M-step run took 7 to 34 minutes here, depending on
    what else was running)."""
    from stable_baselines3.common.callbacks import BaseCallback

    every = max(1, total // reports)

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.start, self.next_report = time.perf_counter(), every

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:  # reports fall on rollout boundaries (n_steps x n_envs env steps)
            if self.num_timesteps < self.next_report:
                return
            self.next_report = (self.num_timesteps // every + 1) * every
            mean = ppo_training_return(self.model)
            recent = "      none" if mean is None else f"{mean:10.2f}"
            rate = self.num_timesteps / max(time.perf_counter() - self.start, 1e-9)
            print(f"PPO env steps {self.num_timesteps:>10,}/{total:,}  training episode return {recent}  "
                  f"{rate:8,.0f} steps/s", flush=True)

    return Progress()


def ppo_actor_state_dict(sb3_policy, policy) -> dict:
    """Our GaussianMLP's state dict holding an SB3 ActorCriticPolicy's actor weights.

    mlp_extractor.policy_net's linear layers -> body.0, body.2, ...; action_net -> head; log_std -> log_std.
    Raises ValueError naming the mismatch if the two architectures differ (then build PPO with
    ppo_policy_kwargs(cfg), from the same config as the policy).
    """
    from torch import nn

    if getattr(sb3_policy, "use_sde", False) or getattr(sb3_policy, "squash_output", False):
        raise ValueError("the PPO policy uses gSDE or squashed outputs; build it with use_sde=False (the default)")
    theirs = list(sb3_policy.mlp_extractor.policy_net)
    if any(not isinstance(m, (nn.Linear, nn.ReLU)) for m in theirs):
        raise ValueError("the PPO actor has layers other than Linear and ReLU; build it with "
                         "activation_fn=torch.nn.ReLU (see ppo_policy_kwargs)")
    their_linear = [m for m in theirs if isinstance(m, nn.Linear)]
    our_linear = [name for name, m in policy.body.named_children() if isinstance(m, nn.Linear)]
    if len(their_linear) != len(our_linear):
        raise ValueError(f"the PPO actor has {len(their_linear)} hidden layers, the policy {len(our_linear)}; "
                         "build PPO with net_arch pi = the config's hidden_sizes (see ppo_policy_kwargs)")
    pairs = [(f"body.{name}", layer) for name, layer in zip(our_linear, their_linear)]
    pairs.append(("head", sb3_policy.action_net))
    state = {}
    for prefix, layer in pairs:
        state[f"{prefix}.weight"] = layer.weight.detach().clone()
        state[f"{prefix}.bias"] = layer.bias.detach().clone()
    state["log_std"] = sb3_policy.log_std.detach().clone()
    expected = policy.state_dict()
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"PPO actor weight for {key} has shape {tuple(value.shape)}, the policy needs "
                             f"{tuple(expected[key].shape)}; build both from the same config (hidden_sizes, env)")
    return state


def adapt_and_evaluate(cfg, policy_state: dict | None, tasks: int) -> tuple[dict, int]:
    """Returns after 0..3 adaptation steps on the held-out tasks, as the meta-trained policies are evaluated.

    A Trainer built from `cfg` (its seed initialises the policy) evaluates either that fresh policy
    (policy_state None) or the given weights. Returns (returns dict, horizon).
    """
    from metarl.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        if policy_state is not None:
            trainer.policy.load_state_dict(policy_state)
        returns = trainer.evaluate(num_tasks=tasks, steps=EVAL_STEPS, episodes_per_task=cfg.eval_episodes_per_task)
        return returns, trainer.horizon
    finally:
        trainer.close()


def pretrained_state(cfg, root: Path, seed: int, steps: int, n_envs: int) -> tuple[dict, dict]:
    """Train PPO on the task mixture (or load its saved .zip) and return (our policy's state dict, PPO facts)."""
    import torch
    from stable_baselines3 import PPO

    from metarl.config import config_to_dict
    from metarl.policy import GaussianMLP

    torch.set_num_threads(1)
    path = root / BASELINES_DIR / f"{baseline_name(cfg.env, 'pretrained', seed)}.zip"
    facts_path = path.with_suffix(".ppo.json")
    facts = read_json(facts_path)
    same = facts and facts.get("steps") == steps and facts.get("n_envs") == n_envs \
        and same_protocol(facts.get("config"), cfg)
    if path.is_file() and same:
        model = PPO.load(path, device="cpu")
    else:
        model = ppo_model(cfg, seed, steps, n_envs)
        print(f"== {cfg.env} pretrained seed {seed}: PPO for {steps:,} env steps on {n_envs} envs", flush=True)
        start = time.perf_counter()
        model.learn(total_timesteps=steps, callback=ppo_progress(steps))
        facts = {"steps": steps, "n_envs": n_envs, "n_steps": model.n_steps, "batch_size": model.batch_size,
                 "timesteps_done": int(model.num_timesteps), "train_s": time.perf_counter() - start,
                 "final_train_return": ppo_training_return(model),
                 "policy_kwargs": {"net_arch": list(cfg.hidden_sizes), "activation_fn": "ReLU",
                                   "log_std_init": cfg.init_log_std},
                 "hyperparameters": "stable-baselines3 PPO defaults (lr 3e-4, 10 epochs, clip 0.2, GAE 0.95)",
                 "config": config_to_dict(cfg)}
        model.save(path)
        write_json(facts_path, facts)
    obs_dim = int(np.prod(model.observation_space.shape))
    act_dim = int(np.prod(model.action_space.shape))
    policy = GaussianMLP(obs_dim, act_dim, cfg.hidden_sizes, cfg.init_log_std)
    return ppo_actor_state_dict(model.policy, policy), facts


def baseline_cell(root: Path, env: str, kind: str, seed: int, overrides: dict, ppo_steps: int, n_envs: int,
                  tasks: int) -> str:
    """Compute one baseline result (skipped if its JSON already holds it with the same protocol)."""
    from metarl.config import config_to_dict

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
        ppo = None
        state = None
        if kind == "pretrained":
            state, ppo = pretrained_state(cfg, root, seed, ppo_steps, n_envs)
        start = time.perf_counter()
        print(f"== {name}: adapting on {tasks} held-out tasks", flush=True)
        returns, horizon = adapt_and_evaluate(cfg, state, tasks)
        eval_s = time.perf_counter() - start
        train_s = ppo["train_s"] if ppo else 0.0
        write_json(out, {"env": env, "kind": kind, "seed": seed, "adapted": "all parameters (MAML-style)",
                         "horizon": horizon, "tasks": tasks, "steps": EVAL_STEPS,
                         "episodes": cfg.eval_episodes_per_task, "eval_seed": cfg.eval_seed, "returns": returns,
                         "ppo": ppo, "eval_s": eval_s, "wall_s": train_s + eval_s, "config": config_to_dict(cfg)})
    return f"{name}: done"


def same_protocol(saved: dict | None, cfg) -> bool:
    """True if a saved config dict matches cfg on every key that changes a baseline's result (not iterations, not
    the meta-update's)."""
    from metarl.config import load_config

    if not isinstance(saved, dict):
        return False
    try:
        return not config_differences(load_config(None, saved), cfg, ignore=META_UPDATE_KEYS)
    except Exception:  # noqa: BLE001  (an unreadable or outdated saved config: recompute)
        return False


def default_ppo_steps(env: str) -> int:
    return PPO_STEPS.get(env, PPO_STEPS_OTHER)


def cmd_baselines(args: argparse.Namespace) -> int:
    from metarl.config import parse_overrides

    overrides = parse_overrides(args.overrides)
    failures = []
    with sigterm_as_keyboard_interrupt():
        for env in args.envs:
            for seed in args.seeds:
                for kind in args.kinds:
                    steps = args.ppo_steps or default_ppo_steps(env)
                    try:
                        print(baseline_cell(args.root, env, kind, seed, overrides, steps, args.ppo_envs,
                                            args.eval_tasks), flush=True)
                    except KeyboardInterrupt:
                        print("\ninterrupted: finished baselines are kept; run the same command again to go on",
                              file=sys.stderr)
                        return 130
                    except Exception:  # noqa: BLE001  (go on with the next baseline)
                        failures.append(baseline_name(env, kind, seed))
                        traceback.print_exc()
    return report_failures(failures, "all requested baselines are evaluated")


# ================================================================================================================
# aggregate: the table, the JSON, the plots
# ================================================================================================================

@dataclasses.dataclass
class RunRecord:
    """What aggregate needs from one run directory."""

    name: str
    path: Path
    env: str
    algo: str
    seed: int
    cfg: object
    iterations_done: int
    curve: list            # (iteration, env_steps, post-adaptation return) per training iteration
    eval: dict | None      # eval.json
    timing: dict | None    # timing.json
    iteration_time_s: float

    @property
    def finished(self) -> bool:
        """Trained to its configured iterations and evaluated by `run` (40 tasks, 0..3 steps) at that point."""
        e = self.eval or {}
        trained = self.iterations_done >= self.cfg.iterations
        return trained and e.get("iteration") == self.iterations_done and e.get("steps", -1) >= EVAL_STEPS

    @property
    def wall_s(self) -> float:
        """Wall-clock seconds across sittings (timing.json), else the sum of the iterations' times."""
        return self.timing["wall_s"] if self.timing else self.iteration_time_s


def read_run(path: Path) -> RunRecord:
    from metarl.config import load_config
    from metarl.run import CONFIG_FILE, EVAL_FILE, METRICS_FILE

    cfg = load_config(path / CONFIG_FILE)
    records = [r for r in read_metrics(path / METRICS_FILE) if "returns/post_adaptation" in r]
    by_iteration = {r["iteration"]: r for r in records}  # the last line of an iteration wins
    curve = [(i, by_iteration[i]["env_steps"], by_iteration[i]["returns/post_adaptation"])
             for i in sorted(by_iteration)]
    return RunRecord(name=path.name, path=path, env=cfg.env, algo=cfg.algo, seed=cfg.seed, cfg=cfg,
                     iterations_done=max(by_iteration, default=0), curve=curve, eval=read_json(path / EVAL_FILE),
                     timing=read_json(path / TIMING_FILE),
                     iteration_time_s=sum(r.get("time/iteration_s", 0.0) for r in by_iteration.values()))


def collect_runs(root: Path) -> list[RunRecord]:
    """Every run directory (a folder with config.yaml) directly under root, sorted by name."""
    from metarl.run import CONFIG_FILE

    if not root.is_dir():
        raise ReproduceError(f"--root {str(root)!r} does not exist; pass the folder given to `{SCRIPT} run --root`")
    return [read_run(p) for p in sorted(root.iterdir()) if p.is_dir() and (p / CONFIG_FILE).is_file()]


def collect_baselines(root: Path) -> list[dict]:
    folder = root / BASELINES_DIR
    if not folder.is_dir():
        return []
    found = [read_json(p) for p in sorted(folder.glob("*.json")) if not p.name.endswith(".ppo.json")]
    return [b for b in found if b and {"env", "kind", "seed", "returns"} <= set(b)]


def reference_iterations(env: str) -> int | None:
    """The protocol's number of iterations: configs/<env>.yaml's (500), None for a family without a config."""
    from metarl.config import load_config
    from metarl.run import default_config_file

    path = default_config_file(env)
    return load_config(path).iterations if path else None


def summarise(values_by_seed: dict[int, dict]) -> dict:
    """Mean and std over seeds (population std, ddof=0) of each return_step_k, from per-seed eval returns."""
    seeds = sorted(values_by_seed)
    out = {"seeds": seeds, "mean": {}, "std": {}}
    for step in range(EVAL_STEPS + 1):
        key = f"return_step_{step}"
        values = [values_by_seed[s][key] for s in seeds if key in values_by_seed[s]]
        if values:
            out["mean"][key] = float(np.mean(values))
            out["std"][key] = float(np.std(values))
    return out


def method_cells(runs: list[RunRecord], baselines: list[dict]) -> dict:
    """env -> method -> summary over seeds, from finished runs and baseline results only."""
    cells: dict = {}
    for r in runs:
        if r.finished:
            cell = cells.setdefault(r.env, {}).setdefault(r.algo, {"per_seed": {}})
            cell["per_seed"][r.seed] = {"returns": r.eval["returns"], "iterations": r.iterations_done,
                                        "env_steps": r.eval.get("env_steps"), "wall_s": r.wall_s,
                                        "timing_source": "timing.json" if r.timing else "sum of time/iteration_s",
                                        "run_dir": r.name}
    for b in baselines:
        cell = cells.setdefault(b["env"], {}).setdefault(b["kind"], {"per_seed": {}})
        cell["per_seed"][b["seed"]] = {"returns": b["returns"], "wall_s": b.get("wall_s"),
                                       "ppo_steps": (b.get("ppo") or {}).get("steps")}
    for env_cells in cells.values():
        for cell in env_cells.values():
            cell.update(summarise({s: v["returns"] for s, v in cell["per_seed"].items()}))
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
                r = by_name.get(run_name(env, algo, seed))
                reason = run_problem(r, full)
                if reason:
                    missing.append(f"{run_name(env, algo, seed)}: {reason}")
        for kind in kinds:
            for seed in seeds:
                if (env, kind, seed) not in have_baseline:
                    missing.append(f"{baseline_name(env, kind, seed)}: not run (`{SCRIPT} baselines`)")
    return missing


def run_problem(r: RunRecord | None, full: int | None) -> str | None:
    """Why a run does not count as a finished full-protocol result, or None if it does."""
    if r is None:
        return "no run directory (not started, or kept elsewhere until it finishes)"
    if not r.finished:
        if r.iterations_done < r.cfg.iterations:
            return f"interrupted at iteration {r.iterations_done}/{r.cfg.iterations} (re-run `{SCRIPT} run` to resume)"
        return "trained but no final evaluation in eval.json (re-run `run` to write it)"
    if r.eval.get("tasks") != EVAL_TASKS:
        return f"final evaluation on {r.eval.get('tasks')} held-out tasks, not {EVAL_TASKS} (in the table, flagged)"
    if full is not None and r.iterations_done < full:
        return f"finished with {r.iterations_done} of the protocol's {full} iterations (in the table, flagged)"
    return None


def env_protocol(env: str, runs: list[RunRecord], baselines: list[dict]) -> dict:
    """The protocol behind an env's numbers, read from its runs' configs (configs/<env>.yaml if none yet)."""
    from metarl.config import config_to_dict, load_config
    from metarl.envs import get_family, make
    from metarl.run import default_config_file

    cfgs = [r.cfg for r in runs if r.env == env and r.finished] or [r.cfg for r in runs if r.env == env]
    if not cfgs:
        path = default_config_file(env)
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
    ppo = sorted({b["ppo"]["steps"] for b in baselines if b["env"] == env and b.get("ppo")})
    protocol["ppo_steps"] = ppo
    protocol["eval_tasks"] = EVAL_TASKS
    return protocol


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


def method_label(method: str, cell: dict) -> str:
    if method == "pretrained":
        steps = sorted({v["ppo_steps"] for v in cell["per_seed"].values() if v.get("ppo_steps")})
        budget = "/".join(f"{s:,}" for s in steps) or "?"
        return f"PPO pre-trained on the task mixture ({budget} env steps) + adaptation"
    return METHOD_LABELS.get(method, method)


def env_table(env: str, cells: dict) -> list[str]:
    """The markdown table of one env: our methods, then the papers' reference rows."""
    head = ["| method | seeds | iterations | 0 steps | 1 step | 2 steps | 3 steps | ANIL paper, Table 2 "
            "(avg return; compare with 1 step) | wall-clock per run (mean) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    order = [m for m in (*ALGOS, *BASELINE_KINDS) if m in cells] + sorted(set(cells) - {*ALGOS, *BASELINE_KINDS})
    for method in order:
        cell = cells[method]
        paper = ANIL_PAPER_TABLE2.get(method, {}).get(env)
        paper_text = f"{paper[0]:.1f} ± {paper[1]:.1f}" if paper else ""
        its = iterations_text(cell) if method in ALGOS else "-"
        rows.append(f"| {method_label(method, cell)} | {len(cell['seeds'])} | {its} | "
                    + " | ".join(fmt_cell(cell, k) for k in range(EVAL_STEPS + 1))
                    + f" | {paper_text} | {mean_wall(cell)} |")
    for method in ALGOS:
        paper = ANIL_PAPER_TABLE2[method].get(env)
        if paper and method not in cells:
            rows.append(f"| {METHOD_LABELS[method]}: not finished yet | 0 | - | - | - | - | - | "
                        f"{paper[0]:.1f} ± {paper[1]:.1f} | |")
    curve = MAML_PAPER_CURVES.get(env)
    if curve:
        rows.append("| MAML, Finn et al. 2017 (reference result files) | - | - | "
                    + " | ".join(f"{v:.1f}" for v in curve) + " | | |")
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


def regenerate_commands(root: Path, argv: list[str]) -> list[str]:
    """The recorded run/baselines/publish commands, then this aggregate command."""
    return [line for line in recorded_commands(root) if line.strip()] + [command_line(argv)]


def render_markdown(report: dict) -> str:
    lines = ["# Reproduction: ANIL and MAML on the MAML paper's RL task families", "",
             "Commands that regenerate every file here (from the repository root; `run` and `baselines` are "
             "resumable, so running them again continues or skips finished work):", "", "```bash",
             *report["commands"], "```", "",
             f"Generated {report['generated']} from the run directories under `{report['root']}` (metarl "
             f"{report['metarl_version']}, commit {report['git_commit'] or 'unknown'}). Every number of ours is "
             "read from those directories (`eval.json`, `metrics.jsonl`, `timing.json`, `baselines/*.json`); "
             "the papers' numbers are cited, not computed.", "",
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
             "- iterations: meta-iterations completed (one number if all seeds agree, else min–max); wall-clock: "
             "seconds across sittings from `timing.json` (training, periodic and final evaluations), PPO training "
             "plus evaluation for the baselines.", ""]
    for env in report["envs"]:
        lines += [f"## {env}", "", f"Protocol: {protocol_line(report['protocol'][env])}.", "",
                  *env_table(env, report["cells"].get(env, {})), ""]
        for kind in ("adaptation", "curves"):
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


def plot_curves(env: str, runs: list[RunRecord], out: Path) -> str | None:
    """Meta-training curves: post-adaptation return against env steps, mean and min-max over seeds, per algo."""
    plt = pyplot()
    by_algo: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.env == env and r.curve:
            by_algo.setdefault(r.algo, []).append(r)
    if not by_algo:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algo, group in sorted(by_algo.items()):
        x, mean, low, high = aligned_curve(group)
        (line,) = ax.plot(x, mean, label=f"{algo.upper()} ({len(group)} seed{'s' if len(group) > 1 else ''})")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("environment steps (mean over seeds)")
    ax.set_ylabel("post-adaptation return (meta-batch mean)")
    ax.set_title(f"{env}: meta-training (line: mean, band: min-max over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    name = f"curves_{env}.png"
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    return name


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


def plot_adaptation(env: str, cells: dict, out: Path) -> str | None:
    """Return against adaptation steps 0..3: ours and the baselines (mean ± std over seeds), the papers' dashed."""
    plt = pyplot()
    if not cells and env not in MAML_PAPER_CURVES:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    steps = np.arange(EVAL_STEPS + 1)
    for method, cell in cells.items():
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


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a clear error saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ReproduceError("aggregate draws its plots with matplotlib, which is not installed; "
                             "install it with `pip install -e \".[plots]\"`") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def build_report(args: argparse.Namespace, argv: list[str]) -> dict:
    """Everything aggregate writes, as one dict (reproduction.json is this, minus private keys)."""
    import metarl

    runs = collect_runs(args.root)
    baselines = collect_baselines(args.root)
    envs = list(dict.fromkeys([*args.envs, *(r.env for r in runs), *(b["env"] for b in baselines)]))
    cells = method_cells(runs, baselines)
    return {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "root": str(args.root), "metarl_version": metarl.__version__, "git_commit": git_commit(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "commands": regenerate_commands(args.root, argv),
        "statistic": f"per seed: mean return over {EVAL_TASKS} held-out tasks; per cell: mean and population std "
                     "(ddof=0) over seeds",
        "envs": envs,
        "protocol": {env: env_protocol(env, runs, baselines) for env in envs},
        "cells": cells,
        "references": {"anil_paper_table2": {m: {e: list(v) for e, v in t.items()}
                                             for m, t in ANIL_PAPER_TABLE2.items()},
                       "anil_paper_table2_note": "Raghu et al., ICLR 2020, Table 2: average return, mean ± std over "
                                                 "3 seeds; compared with our return after 1 adaptation step",
                       "maml_paper_curves": {e: list(v) for e, v in MAML_PAPER_CURVES.items()},
                       "maml_paper_curves_note": "Finn et al., ICML 2017, result files: mean return over 40 test "
                                                 "tasks after 0..3 steps; horizon 200 cheetah, 100 nav2d"},
        "runs": [{"name": r.name, "env": r.env, "algo": r.algo, "seed": r.seed, "finished": r.finished,
                  "iterations_done": r.iterations_done, "iterations": r.cfg.iterations, "wall_s": r.wall_s,
                  "iteration_time_s": r.iteration_time_s, "timing": r.timing, "eval": r.eval} for r in runs],
        "baselines": baselines,
        "missing": missing_cells(runs, baselines, args.envs, args.algos, args.seeds, args.kinds),
        "_runs": runs,
        "_timing_table": timing_table(runs),
    }


def cmd_aggregate(args: argparse.Namespace, argv: list[str]) -> int:
    report = build_report(args, argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report["plots"] = {}
    for env in report["envs"]:
        env_cells = report["cells"].get(env, {})
        report["plots"][env] = {"adaptation": plot_adaptation(env, env_cells, args.out),
                                "curves": plot_curves(env, report["_runs"], args.out)}
    write_text(args.out / "reproduction.md", render_markdown(report))
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    write_json(args.out / "reproduction.json", json.loads(json.dumps(public, default=str)))
    plots = sum(bool(name) for env_plots in report["plots"].values() for name in env_plots.values())
    print(f"wrote {args.out / 'reproduction.md'}, reproduction.json and {plots} plots; "
          f"{len(report['missing'])} grid cell(s) missing or short of the protocol")
    return 0


# ================================================================================================================
# publish: copy finished runs somewhere committable
# ================================================================================================================

def cmd_publish(args: argparse.Namespace, argv: list[str]) -> int:
    """Copy each finished run's small files (no TensorBoard events), its kept snapshots, the baseline results and
    commands.txt to --dest.

    The copies are ordinary run directories: `metarl eval` re-checks them (a snapshot with `--checkpoint`),
    `aggregate --root DEST` rebuilds the report. A run already in DEST with the same final checkpoint is skipped.
    """
    from metarl.run import CHECKPOINT_FILE, KEPT_CHECKPOINTS_DIR

    runs = [r for r in collect_runs(args.root) if r.finished]
    args.dest.mkdir(parents=True, exist_ok=True)
    unchanged = 0
    for r in runs:
        target = args.dest / r.name
        if (target / CHECKPOINT_FILE).is_file() and filecmp.cmp(r.path / CHECKPOINT_FILE, target / CHECKPOINT_FILE,
                                                                 shallow=False):
            # Published before: left alone, so that a copy re-evaluated since (eval.json) is not overwritten.
            unchanged += 1
            continue
        target.mkdir(exist_ok=True)
        for name in PUBLISHED_FILES:
            if (r.path / name).is_file():
                shutil.copy2(r.path / name, target / name)
        snapshots = sorted((r.path / KEPT_CHECKPOINTS_DIR).glob("iteration-*.pt"))
        if snapshots:  # a policy is small: the curve's points stay re-checkable (tens of kB each)
            (target / KEPT_CHECKPOINTS_DIR).mkdir(exist_ok=True)
            for path in snapshots:
                shutil.copy2(path, target / KEPT_CHECKPOINTS_DIR / path.name)
    baselines = args.root / BASELINES_DIR
    copied = 0
    if baselines.is_dir():
        (args.dest / BASELINES_DIR).mkdir(exist_ok=True)
        for path in sorted(baselines.iterdir()):
            if path.suffix in (".json", ".zip") and not path.name.endswith(".tmp"):
                shutil.copy2(path, args.dest / BASELINES_DIR / path.name)
                copied += 1
    # The provenance, so `aggregate --root DEST` can print it too. Merged, not copied: DEST may hold runs published
    # from another root (an earlier sitting, another machine), whose commands stay first. This root's follow in
    # its own order, ending with this publish, which must come after the runs it copies.
    ours = with_command_last(recorded_commands(args.root), argv)
    merged = [line for line in recorded_commands(args.dest) if line not in ours] + ours
    write_text(args.dest / COMMANDS_FILE, "".join(line + "\n" for line in merged))
    print(f"published {len(runs) - unchanged} finished run(s) ({unchanged} already there, left as they are) and "
          f"{copied} baseline file(s) to {args.dest}")
    if runs:
        r = runs[0]
        print(f"re-check a number with: metarl eval {args.dest / r.name} --tasks {EVAL_TASKS} --steps {EVAL_STEPS} "
              f"--episodes {r.cfg.eval_episodes_per_task} --out /tmp/{r.name}-eval.json")
    return 0


# ================================================================================================================
# command line
# ================================================================================================================

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        command = " ".join(self.prog.split()[1:])  # "run" for the run subcommand's parser, "" at the top
        self.exit(2, f"reproduce.py: error: {message} (see `python {SCRIPT} {command} --help`)\n".replace("  ", " "))


def _grid_args(p: argparse.ArgumentParser, envs=ENVS, seeds=SEEDS) -> None:
    p.add_argument("--root", type=Path, required=True, help="folder holding the grid's run directories")
    p.add_argument("--envs", nargs="+", default=list(envs), metavar="ENV",
                   help=f"task families (default: {' '.join(envs)})")
    p.add_argument("--seeds", nargs="+", type=int, default=list(seeds), metavar="N", help="seeds (default: 0 1 2)")


def _overrides_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override config keys of configs/<env>.yaml for every run (see `metarl train "
                   "--help-config`); a resumed run must get the values it started with")


def _eval_tasks_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-tasks", type=int, default=EVAL_TASKS, metavar="N",
                   help=f"held-out tasks of the final evaluation (default: {EVAL_TASKS}, the protocol)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reproduce.py", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", metavar="{run,baselines,aggregate,publish}")

    p = sub.add_parser("run", help="meta-train the (env, algo, seed) grid; resumable")
    _grid_args(p)
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS), help="algorithms (default: anil maml)")
    _overrides_arg(p)
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs trained at once, in child processes logging to ROOT/logs/ (default 1); with N > 1 "
                   "each run gets --set sampler_threads=1 update_threads=1 unless you set them")
    _eval_tasks_arg(p)

    p = sub.add_parser("baselines", help="random-init and PPO-pretrained policies, adapted like ours; resumable")
    _grid_args(p)
    p.add_argument("--kinds", nargs="+", choices=BASELINE_KINDS, default=list(BASELINE_KINDS),
                   help="baselines to compute (default: both)")
    p.add_argument("--ppo-steps", type=int, metavar="N",
                   help="PPO env steps (default: 1,000,000 for cheetah, 200,000 for nav2d)")
    p.add_argument("--ppo-envs", type=int, default=PPO_ENVS, metavar="N",
                   help=f"task-mixture envs PPO steps side by side (default {PPO_ENVS})")
    _overrides_arg(p)
    _eval_tasks_arg(p)

    p = sub.add_parser("aggregate", help="write the table, JSON and plots from ROOT")
    _grid_args(p)
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS), help="algorithms expected in the grid")
    p.add_argument("--kinds", nargs="+", choices=BASELINE_KINDS, default=list(BASELINE_KINDS),
                   help="baselines expected in the grid")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/reproduction"),
                   help="output folder (default: benchmarks/results/reproduction)")

    p = sub.add_parser("publish", help="copy finished runs' checkpoints, configs, metrics and eval.json")
    p.add_argument("--root", type=Path, required=True, help="folder holding the grid's run directories")
    p.add_argument("--dest", type=Path, default=Path("benchmarks/results/runs"),
                   help="destination (default: benchmarks/results/runs)")

    p = sub.add_parser("_cell")  # one run in a child process of `run --jobs N`; not for direct use
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--algo", required=True, choices=ALGOS)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--jobs", type=int, default=1)
    _eval_tasks_arg(p)
    _overrides_arg(p)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject values argparse cannot check, with the fix in the message."""
    for name in ("jobs", "ppo_envs", "eval_tasks", "ppo_steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ReproduceError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "envs", None):
        from metarl.run import check_env

        args.envs = [check_env(env) for env in args.envs]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    from metarl.config import ConfigError
    from metarl.run import RunError

    try:
        check_args(args)
        commands = {"run": cmd_run, "baselines": cmd_baselines, "publish": lambda a: cmd_publish(a, argv),
                    "_cell": cmd_cell, "aggregate": lambda a: cmd_aggregate(a, argv)}
        code = commands[args.command](args)
        # Provenance for the report: commands that did their work, or were stopped cleanly and resume as is.
        if args.command in ("run", "baselines", "publish") and code in (0, 130):
            record_command(args.root, argv)
        return code
    except (ReproduceError, RunError, ConfigError) as exc:
        print(f"reproduce.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nreproduce.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
