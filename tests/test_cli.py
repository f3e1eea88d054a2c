"""The `metarl` command line, run as a user runs it: in a subprocess, on a tiny nav2d problem.

Covers the run directory (config, TensorBoard, metrics.jsonl, checkpoint), resuming after a clean stop and after
a real Ctrl-C/SIGTERM (the result must equal an uninterrupted run's), `eval`, `envs`, --help, and the one-line
errors for bad input.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.cli import main as metarl_main

TINY = ["meta_batch_size=4", "episodes_per_task=4", "horizon=20", "eval_every=2", "eval_tasks=3",
        "eval_episodes_per_task=3", "eval_steps=1", "hidden_sizes=[16,16]", "checkpoint_every=1",
        "sampler_threads=1", "update_threads=1"]
STRAIGHT_ITERATIONS = 6
TB_TAGS = ["returns/pre_adaptation", "returns/post_adaptation", "trpo/kl", "trpo/surrogate_before",
           "trpo/surrogate_after", "trpo/line_search_steps", "time/env_steps_per_s", "time/iteration_s",
           "eval/return_step_0", "eval/return_step_1"]


def metarl(*args: str, cwd: Path, check: bool = True, fresh_process: bool = False) -> subprocess.CompletedProcess:
    """Run `metarl ARGS` in `cwd` and return its exit code and output (text) as a finished process would: in this
    process (`metarl.cli.main`, with stdout and stderr captured; no interpreter start-up, which was most of these
    tests' time), or with `fresh_process` as `python -m metarl.cli ARGS`."""
    if fresh_process:
        proc = subprocess.run([sys.executable, "-m", "metarl.cli", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=120)
    else:
        out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = metarl_main(list(args))
                except SystemExit as stop:  # argparse's errors and --help
                    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
        finally:
            os.chdir(here)
        proc = subprocess.CompletedProcess(["metarl", *args], code, out.getvalue(), err.getvalue())
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def train_args(run_dir: Path, iterations: int, seed: int = 1) -> list[str]:
    return ["train", "--env", "nav2d", "--seed", str(seed), "--iterations", str(iterations),
            "--run-dir", str(run_dir), "--set", *TINY]


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl split into (iteration lines, evaluation lines)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if any(k.startswith("eval/") for k in line)]
    return [line for line in lines if line not in evals], evals


def without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # In the order they were written: the accumulator reads a directory's event files in name order, and a resume
    # in the same second as the interrupt is told apart by the pid alone (here the resume runs in the test's process,
    # whose pid is lower than the interrupted child's), so the file order can be the reverse of the sittings'.
    events = EventAccumulator(str(run_dir)).Reload().Scalars(tag)
    return [event.step for event in sorted(events, key=lambda event: event.wall_time)]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """One uninterrupted tiny run: the reference for the resume tests."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    metarl(*train_args(run_dir, STRAIGHT_ITERATIONS), cwd=run_dir.parent)
    return run_dir


# -- training writes a complete run directory ---------------------------------------------------------------

def test_training_writes_config_tensorboard_metrics_and_checkpoint(straight_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert {"config.yaml", "checkpoint.pt", "metrics.jsonl"} <= {p.name for p in straight_run.iterdir()}
    assert "iterations: 6" in (straight_run / "config.yaml").read_text()

    events = EventAccumulator(str(straight_run)).Reload()
    tags = events.Tags()
    assert set(TB_TAGS) <= set(tags["scalars"])
    assert "hyperparameters/text_summary" in tags["tensors"]
    table = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| meta_batch_size | 4 |" in table

    iterations, evals = read_metrics(straight_run)
    assert [line["iteration"] for line in iterations] == list(range(1, STRAIGHT_ITERATIONS + 1))
    env_steps = [line["env_steps"] for line in iterations]
    assert env_steps == sorted(set(env_steps)) and env_steps[0] > 0
    # Each line holds exactly the TensorBoard scalars, and TensorBoard's x-axis is env steps.
    training_tags = {t for t in tags["scalars"] if not t.startswith("eval/")}
    assert all(set(line) == training_tags | {"iteration", "env_steps"} for line in iterations)
    assert scalar_steps(straight_run, "returns/post_adaptation") == env_steps
    # eval_every=2 and at the end: iterations 2, 4, 6.
    assert [line["iteration"] for line in evals] == [2, 4, 6]
    assert scalar_steps(straight_run, "eval/return_step_1") == [env_steps[i - 1] for i in (2, 4, 6)]

    ckpt = torch.load(straight_run / "checkpoint.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == STRAIGHT_ITERATIONS


def test_resuming_a_finished_run_says_so(straight_run):
    proc = metarl("train", "--resume", str(straight_run), cwd=straight_run.parent)
    assert "already complete" in proc.stdout
    assert len(read_metrics(straight_run)[0]) == STRAIGHT_ITERATIONS


def test_plain_progress_lines_when_not_a_terminal(straight_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    proc = metarl("train", "--resume", str(run_dir), "--iterations", str(STRAIGHT_ITERATIONS + 1), cwd=tmp_path)
    assert "\r" not in proc.stdout + proc.stderr  # no progress bar in logs
    assert f"iter {STRAIGHT_ITERATIONS + 1}/{STRAIGHT_ITERATIONS + 1}" in proc.stdout
    assert "eval at iter" in proc.stdout


# -- resume: same result as an uninterrupted run ------------------------------------------------------------

def test_resume_after_a_clean_stop_matches_an_uninterrupted_run(straight_run, tmp_path):
    run_dir = tmp_path / "run"
    metarl(*train_args(run_dir, 2), cwd=tmp_path)
    proc = metarl("train", "--resume", str(run_dir), "--iterations", "4", cwd=tmp_path)
    assert "resuming" in proc.stdout and "at iteration 3/4" in proc.stdout
    assert "iterations: 4" in (run_dir / "config.yaml").read_text()

    resumed, _ = read_metrics(run_dir)
    straight, _ = read_metrics(straight_run)
    assert [line["iteration"] for line in resumed] == [1, 2, 3, 4]
    assert without_timing(resumed) == without_timing(straight[:4])
    assert scalar_steps(run_dir, "trpo/kl") == [line["env_steps"] for line in straight[:4]]


def test_resume_may_change_speed_settings_alone_and_they_change_no_result(straight_run, tmp_path):
    """--set with --resume takes the settings of speed and disk use (another device, threads, chunk) for this
    sitting: the run continues as the uninterrupted one (those that change no rounding: bitwise); config.yaml
    keeps the run's own values."""
    run_dir = tmp_path / "run"
    metarl(*train_args(run_dir, 2), cwd=tmp_path)
    saved = (run_dir / "config.yaml").read_text()
    refused = metarl("train", "--resume", str(run_dir), "--set", "task_chunk=1", "inner_lr=0.5", "seed=4",
                     cwd=tmp_path, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "--set inner_lr, --set seed cannot be combined with --resume" in refused.stderr
    assert "device" in refused.stderr and "task_chunk" in refused.stderr  # what may change is named
    assert (run_dir / "config.yaml").read_text() == saved
    metarl("train", "--resume", str(run_dir), "--iterations", "4", "--set", "device=cpu", "checkpoint_every=2",
           "max_bad_iterations=5", cwd=tmp_path)
    resumed, _ = read_metrics(run_dir)
    straight, _ = read_metrics(straight_run)
    assert without_timing(resumed) == without_timing(straight[:4])
    assert (run_dir / "config.yaml").read_text() == saved.replace("iterations: 2", "iterations: 4")


def test_kept_checkpoints_are_snapshots_a_run_can_resume_from(straight_run, tmp_path):
    run_dir = tmp_path / "run"
    # checkpoint_every=3 does not divide 2 or 4: keeping must save a checkpoint of those iterations itself.
    metarl(*train_args(run_dir, 4), "checkpoint_every=3", "keep_checkpoint_every=2", cwd=tmp_path)
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["iteration-000002.pt", "iteration-000004.pt"]
    for name, iteration in zip(kept, (2, 4)):
        assert torch.load(run_dir / "checkpoints" / name, weights_only=True)["trainer"]["iteration"] == iteration

    # `metarl eval --checkpoint` evaluates a snapshot as training evaluated that iteration, and writes beside it.
    snapshot = run_dir / "checkpoints" / "iteration-000002.pt"
    metarl("eval", str(run_dir), "--checkpoint", str(snapshot), cwd=tmp_path)
    report = json.loads((run_dir / "checkpoints" / "iteration-000002.eval.json").read_text())
    _, straight_evals = read_metrics(straight_run)
    logged = next(line for line in straight_evals if line["iteration"] == 2)
    assert report["iteration"] == 2 and not (run_dir / "eval.json").exists()
    for key in ("return_step_0", "return_step_1"):
        assert report["returns"][key] == pytest.approx(logged[f"eval/{key}"], abs=1e-5)
    missing = metarl("eval", str(run_dir), "--checkpoint", str(run_dir / "checkpoints" / "iteration-000009.pt"),
                     cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no checkpoint file" in missing.stderr and "iteration-000009.pt" in missing.stderr

    shutil.copyfile(snapshot, run_dir / "checkpoint.pt")
    metarl("train", "--resume", str(run_dir), "--iterations", "4", cwd=tmp_path)
    resumed, _ = read_metrics(run_dir)
    straight, _ = read_metrics(straight_run)
    assert without_timing(resumed) == without_timing(straight[:4])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_resume_after_a_real_interrupt_matches_an_uninterrupted_run(straight_run, tmp_path, signum):
    run_dir = tmp_path / "run"
    # A shell starting us in the background makes SIGINT ignored, and Python then installs no Ctrl-C handler:
    # give the child default SIGINT handling, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "metarl.cli", *train_args(run_dir, 1000)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)  # a hang guard; the old signal bug took ~120 s here under load
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"metarl train --resume {run_dir}" in err

    done = torch.load(run_dir / "checkpoint.pt", weights_only=True)["trainer"]["iteration"]
    assert 1 <= done <= STRAIGHT_ITERATIONS - 2, "the run was stopped later than the test can compare"
    logged, _ = read_metrics(run_dir)  # the signal waited for the iteration's log + state update to finish
    assert logged[-1]["iteration"] == done
    metarl("train", "--resume", str(run_dir), "--iterations", str(done + 2), cwd=tmp_path)

    resumed, _ = read_metrics(run_dir)
    straight, _ = read_metrics(straight_run)
    assert [line["iteration"] for line in resumed] == list(range(1, done + 3))  # no duplicates, no gaps
    assert without_timing(resumed) == without_timing(straight[:done + 2])
    assert scalar_steps(run_dir, "returns/post_adaptation") == [line["env_steps"] for line in straight[:done + 2]]


def test_a_signal_delivered_to_another_thread_still_waits_for_the_deferred_block():
    """kill(2) may hand SIGINT to any thread; Python then runs its handler in the main thread at once. The block
    (a log or checkpoint write) must still finish first, and the interrupt come right after it."""
    from metarl.runs import signals_deferred

    inside, finished = threading.Event(), []

    def send() -> None:  # started before the block, so a signal mask set inside it would not cover this thread
        inside.wait(10)
        os.kill(os.getpid(), signal.SIGINT)

    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored: give the test the usual
    # Ctrl-C handler whoever started pytest, and put back what it found.
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                inside.set()
                sender.join()
                for _ in range(50):  # bytecode boundaries where a pending Python handler would run
                    time.sleep(0.002)
                finished.append(True)
        assert finished == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back
    finally:
        sender.join()
        signal.signal(signal.SIGINT, started_with)


def test_resume_reruns_an_interrupted_final_evaluation(straight_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    # As if Ctrl-C hit during the last evaluation: the checkpoint says it is not logged yet.
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "last_eval_iteration": STRAIGHT_ITERATIONS - 1}, run_dir / "checkpoint.pt")
    proc = metarl("train", "--resume", str(run_dir), cwd=tmp_path)
    assert "final evaluation" in proc.stdout
    assert read_metrics(run_dir) == read_metrics(straight_run)  # evaluation is deterministic; logged once
    assert "already complete" in metarl("train", "--resume", str(run_dir), cwd=tmp_path).stdout


# -- eval and envs ------------------------------------------------------------------------------------------

def test_eval_prints_a_table_and_writes_eval_json(straight_run):
    proc = metarl("eval", str(straight_run), "--tasks", "3", "--steps", "1", cwd=straight_run.parent)
    assert "mean return" in proc.stdout and "std over tasks" in proc.stdout
    report = json.loads((straight_run / "eval.json").read_text())
    assert {"env", "algo", "seed", "iteration", "horizon", "tasks", "steps", "episodes"} <= set(report)
    assert (report["env"], report["tasks"], report["steps"], report["horizon"]) == ("nav2d", 3, 1, 20)
    assert {"return_step_0", "return_step_1"} <= set(report["returns"])
    assert f"{report['returns']['return_step_1']:.2f}" in proc.stdout
    # Per task: its goal and its return after each step; the table's means and stds are over these.
    per_task = report["per_task"]
    assert len(per_task) == 3 and all(len(t["task"]["goal"]) == 2 and len(t["returns"]) == 2 for t in per_task)
    assert len({tuple(t["task"]["goal"]) for t in per_task}) == 3
    for step in (0, 1):
        returns = np.array([t["returns"][step] for t in per_task])
        assert returns.mean() == pytest.approx(report["returns"][f"return_step_{step}"], rel=1e-5)
        assert returns.std() == pytest.approx(report["returns"][f"return_step_{step}_std"], rel=1e-4)


def test_eval_out_writes_elsewhere_and_leaves_the_run_untouched(straight_run, tmp_path):
    before = {p.name: p.read_bytes() for p in straight_run.iterdir() if p.is_file()}
    out = tmp_path / "check" / "eval.json"
    proc = metarl("eval", str(straight_run), "--tasks", "3", "--steps", "1", "--out", str(out), cwd=tmp_path)
    assert f"wrote {out}" in proc.stdout
    assert json.loads(out.read_text())["tasks"] == 3
    assert {p.name: p.read_bytes() for p in straight_run.iterdir() if p.is_file()} == before


def test_eval_out_that_cannot_be_written_is_a_clear_error(straight_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = metarl("eval", str(straight_run), "--out", str(blocker / "eval.json"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot write the evaluation report" in proc.stderr and str(blocker) in proc.stderr


def test_envs_lists_the_builtin_families(tmp_path):
    out = metarl("envs", cwd=tmp_path).stdout
    assert all(name in out for name in ("cheetah-dir", "cheetah-vel", "nav2d"))


def test_help_documents_options_and_config_keys(tmp_path):
    out = metarl("train", "--help", cwd=tmp_path).stdout
    assert all(flag in out for flag in ("--algo", "--resume", "--set", "--help-config", "default"))
    keys = metarl("train", "--help-config", cwd=tmp_path).stdout
    assert "inner_lr" in keys and "meta_batch_size" in keys
    top = subprocess.run([sys.executable, "-m", "metarl", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert top.returncode == 0 and "train" in top.stdout and "eval" in top.stdout


# -- errors: one line, the bad value, no traceback ----------------------------------------------------------

def _corrupt_run(tmp_path: Path, content: bytes | dict) -> Path:
    run_dir = tmp_path / "corrupt"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("env: nav2d\n")
    if isinstance(content, dict):
        torch.save(content, run_dir / "checkpoint.pt")
    else:
        (run_dir / "checkpoint.pt").write_bytes(content)
    return run_dir


@pytest.mark.parametrize("args, expected", [
    (["train", "--env", "no-such-env"], "no-such-env"),
    (["train", "--env", "nav2d", "--algo", "reptile"], "reptile"),
    (["train", "--env", "nav2d", "--set", "inner_lr=-1"], "-1"),
    (["train", "--env", "nav2d", "--set", "inner_rl=0.1"], "inner_rl"),
    (["train", "--env", "nav2d", "--set", "inner_lr"], "inner_lr"),
    (["train", "--env", "nav2d", "--set", "frame_skip=1"], "'nav2d' does not take frame_skip"),
    (["train", "--env", "cheetah-dir", "--set", "frame_skip=0"], "frame_skip"),
    (["train", "--env", "nav2d", "--set", "forward_velocity=com"], "'nav2d' does not take forward_velocity"),
    (["train", "--env", "cheetah-dir", "--set", "forward_velocity=fast"], "'displacement', 'com'"),
    (["eval", "missing-run", "--set", "device=cpu"], "missing-run"),
    (["train"], "--env"),
    (["train", "--resume", "missing-run"], "missing-run"),
    (["train", "--resume", "missing-run", "--seed", "3"], "--seed"),
    (["eval", "missing-run"], "missing-run"),
])
def test_bad_input_gives_one_line_error(tmp_path, args, expected):
    proc = metarl(*args, "--run-dir", str(tmp_path / "out"), cwd=tmp_path, check=False) if args[0] == "train" \
        and "--resume" not in args else metarl(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarl: error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing is created for a bad command


@pytest.mark.parametrize("command, content, expected", [
    ("train", b"not a checkpoint", "cannot read checkpoint"),
    ("eval", b"not a checkpoint", "cannot read checkpoint"),
    ("train", {"format": 1, "trainer": {"policy": {}}, "last_eval_iteration": 0}, "missing trainer.rng"),
])
def test_corrupt_checkpoint_gives_one_line_error(tmp_path, content, expected, command):
    run_dir = _corrupt_run(tmp_path, content)
    args = ["train", "--resume", str(run_dir)] if command == "train" else ["eval", str(run_dir)]
    proc = metarl(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "checkpoint.pt" in lines[0], proc.stderr


def test_env_accepts_what_its_help_says_and_refuses_a_gymnasium_env_that_is_not_a_task_family(capsys, tmp_path):
    from metarl.envs import get_family

    from metarl.cli import build_parser, main
    from metarl.config import config_help

    accepted = ("a registered short name (see `metarl envs`), the gymnasium id of an env that honours the task "
                "contract, or module:Class")
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    env_help = next(a.help for a in train._actions if a.dest == "env")
    assert accepted in " ".join(env_help.split())
    assert accepted in next(text for name, _, _, text in config_help() if name == "env")
    for name in ("cheetah-dir", "cheetah-vel", "nav2d"):
        assert get_family(get_family(name).gym_id).name == name
    # a plain gymnasium env is not a task family: one line naming it and what the contract needs, nothing created
    assert main(["train", "--env", "Pendulum-v1", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metarl: error: "), err
    assert "'Pendulum-v1'" in err[0] and "exists but is not a metarl task family" in err[0]
    assert "sample_tasks(rng, n)" in err[0] and not (tmp_path / "run").exists()


# A user's task family without a `horizon` class attribute: the horizon comes from --set horizon=N.
NO_HORIZON_FAMILY = """
import dataclasses

import gymnasium
import numpy as np
from gymnasium.spaces import Box


@dataclasses.dataclass(frozen=True)
class Goal:
    value: float


class PointEnv(gymnasium.Env):
    \"\"\"A point on a line moved towards a goal in [-1, 1]; no horizon of its own.\"\"\"

    observation_space = Box(-np.inf, np.inf, (1,), np.float32)
    action_space = Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self._task, self._x = Goal(0.0), 0.0

    def sample_tasks(self, rng, n):
        return [Goal(float(v)) for v in rng.uniform(-1.0, 1.0, n)]

    @property
    def task(self):
        return self._task

    @task.setter
    def task(self, task):
        if not isinstance(task, Goal) or not -1.0 <= task.value <= 1.0:
            raise ValueError(f"point: bad task {task!r}; allowed: Goal(value) with value in [-1, 1]")
        self._task = task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.task = options["task"]
        self._x = 0.0
        return np.array([self._x], dtype=np.float32), {"task": self._task}

    def step(self, action):
        self._x += 0.1 * float(np.clip(action[0], -1.0, 1.0))
        reward = -abs(self._x - self._task.value)
        return np.array([self._x], dtype=np.float32), reward, False, False, {"task": self._task, "reward_dist": reward}
"""
TINY_USER_RUN = ["--iterations", "1", "--set", "meta_batch_size=2", "episodes_per_task=2", "eval_tasks=2",
                 "eval_steps=1", "eval_episodes_per_task=2", "hidden_sizes=[8]", "sampler_threads=1",
                 "update_threads=1"]


def test_train_takes_the_horizon_from_set_for_a_family_without_one(tmp_path):
    (tmp_path / "point_tasks.py").write_text(NO_HORIZON_FAMILY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "metarl.cli", "train", "--env", "point_tasks:PointEnv"]
    # without one: a one-line error saying how to give one, and nothing created
    proc = subprocess.run([*base, "--run-dir", str(tmp_path / "refused"), *TINY_USER_RUN], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "'point_tasks:PointEnv' has no horizon" in lines[0] and "--set horizon=N" in lines[0]
    assert not (tmp_path / "refused").exists()
    proc = subprocess.run([*base, "--run-dir", str(tmp_path / "run"), *TINY_USER_RUN, "horizon=5"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "horizon: 5" in (tmp_path / "run" / "config.yaml").read_text()
    iterations, evals = read_metrics(tmp_path / "run")
    assert [line["iteration"] for line in iterations] == [1] and evals


def test_eval_refuses_an_absurd_size_and_shows_its_progress(tmp_path):
    """`metarl eval RUN --steps 99999999` is refused in one line naming what is allowed; an evaluation prints one
    progress line per adaptation step (stderr), so a long one shows where it is."""
    run_dir = tmp_path / "run"
    metarl(*train_args(run_dir, 1), cwd=tmp_path)
    refused = metarl("eval", str(run_dir), "--steps", "99999999", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--steps 99999999" in refused.stderr and "allowed: 0 to 100" in refused.stderr
    huge = metarl("eval", str(run_dir), "--tasks", "100000", "--episodes", "100000", cwd=tmp_path, check=False)
    assert huge.returncode == 2 and "env steps, over the 1,000,000,000 allowed" in huge.stderr
    done = metarl("eval", str(run_dir), "--steps", "2", "--out", str(tmp_path / "e.json"), cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.startswith("eval: return after")]
    assert [line.split(" of ")[0] for line in lines] == [f"eval: return after {k}" for k in range(3)]


def test_a_run_records_what_it_ran_on_and_eval_says_when_it_runs_elsewhere(tmp_path):
    """setup.json holds each sitting's versions and vector features, eval.json its own; `metarl eval` says in one
    line what differs when the run was written on another set-up (MuJoCo repeats bit for bit only on the same)."""
    from metarl.common import provenance

    run_dir = tmp_path / "run"
    metarl(*train_args(run_dir, 1), cwd=tmp_path)
    sittings = json.loads((run_dir / "setup.json").read_text())["sittings"]
    here = provenance.setup()
    assert len(sittings) == 1 and sittings[0]["from_iteration"] == 0
    assert {k: sittings[0][k] for k in provenance.COMPARED} == here
    assert set(provenance.COMPARED) <= set(here) and here["mujoco"] and isinstance(here["vector_features"], list)
    metarl("train", "--resume", str(run_dir), "--iterations", "2", cwd=tmp_path)
    sittings = json.loads((run_dir / "setup.json").read_text())["sittings"]
    assert [s["from_iteration"] for s in sittings] == [0, 1]
    same = metarl("eval", str(run_dir), "--out", str(tmp_path / "a.json"), cwd=tmp_path)
    assert "another set-up" not in same.stderr
    assert json.loads((tmp_path / "a.json").read_text())["setup"] == here
    record = json.loads((run_dir / "setup.json").read_text())
    record["sittings"][-1].update(mujoco="0.0.1", vector_features=["avx2", "avx512f"])
    (run_dir / "setup.json").write_text(json.dumps(record))
    other = metarl("eval", str(run_dir), "--out", str(tmp_path / "b.json"), cwd=tmp_path)
    notes = [line for line in other.stderr.splitlines() if "another set-up" in line]
    assert len(notes) == 1 and f"mujoco 0.0.1 -> {here['mujoco']}" in notes[0]
    assert f"vector_features avx2+avx512f -> {'+'.join(here['vector_features']) or 'none'}" in notes[0]
