"""Faults a user meets, run as a user runs them: two writers on one run directory, a diverging run, a read-only
folder, a refused resume, a full disk. Each must end with its exit code and one line on stderr, no traceback, and
no file changed that should not be (checksums before and after).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metarl import cli
from metarl import runs as run
from metarl.common.lock import LOCK_FILE, RunLock, RunLocked
from metarl.config import Config, parse_overrides
from metarl.runs import training
from metarl.runs.divergence import Diverged, DivergenceWatch

TINY = ["meta_batch_size=4", "episodes_per_task=4", "horizon=20", "eval_every=2", "eval_tasks=3",
        "eval_episodes_per_task=3", "eval_steps=1", "hidden_sizes=[16,16]", "checkpoint_every=1",
        "sampler_threads=1", "update_threads=1"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "metarl.cli", *args]


def metarl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=cwd, capture_output=True, text=True, timeout=120)


def train_args(run_dir: Path, iterations: int, *extra: str) -> list[str]:
    return ["train", "--env", "nav2d", "--iterations", str(iterations), "--run-dir", str(run_dir),
            "--set", *TINY, *extra]


def one_line_error(stderr: str) -> str:
    """The single `metarl: error:` line of a refused command (and nothing else on stderr)."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarl: error: "), stderr
    return lines[0]


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def strict_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl parsed by a strict JSON parser (bare NaN/Infinity tokens refused)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return [json.loads(line, parse_constant=refuse) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_iteration(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoint.pt", weights_only=True)["trainer"]["iteration"])


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A finished 2-iteration run to copy (each test changes its own copy)."""
    run_dir = tmp_path_factory.mktemp("small") / "run"
    proc = metarl(*train_args(run_dir, 2), cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr
    return run_dir


# -- one writer per run directory ------------------------------------------------------------------------------

def test_two_writers_on_one_run_directory_one_is_refused_and_a_killed_writer_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    both = [subprocess.Popen(command(*train_args(run_dir, 6)), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.pid, p.wait(timeout=120), p.stderr.read()) for p in both]
    (winner, _, _), (loser, _, stderr) = sorted(results, key=lambda r: r[1])
    assert sorted(code for _, code, _ in results) == [0, 2], results
    line = one_line_error(stderr)
    assert "being written by another training process" in line and f"pid {winner}" in line
    iterations = [r["iteration"] for r in strict_records(run_dir) if "returns/post_adaptation" in r]
    assert iterations == list(range(1, 7))  # every iteration once, in order: one writer
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1 and checkpoint_iteration(run_dir) == 6
    assert (run_dir / LOCK_FILE).read_text() == ""  # released on exit

    # A resume while the run trains is refused and changes no file of it.
    writer = subprocess.Popen(command("train", "--resume", str(run_dir), "--iterations", "400"), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: checkpoint_iteration(run_dir) > 6)  # it holds the lock and trains
    config = (run_dir / "config.yaml").read_bytes()
    refused = metarl("train", "--resume", str(run_dir), "--iterations", "500", cwd=tmp_path)
    assert refused.returncode == 2 and f"pid {writer.pid}" in one_line_error(refused.stderr)
    assert (run_dir / "config.yaml").read_bytes() == config  # still the writer's 400
    # Killed without warning, the writer leaves its record but not its lock: the next writer takes over.
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == writer.pid
    done = checkpoint_iteration(run_dir)
    resumed = metarl("train", "--resume", str(run_dir), "--iterations", str(done + 1), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over {run_dir} from pid {writer.pid}" in resumed.stdout
    assert checkpoint_iteration(run_dir) == done + 1


def test_a_lock_is_reentrant_in_one_process_and_a_dead_holders_record_is_stale(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 17, "host": os.uname().nodename}))
    with RunLock(tmp_path) as outer:
        assert outer.stale["pid"] == 2**22 + 17
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with RunLock(tmp_path) as inner:  # the same process again (the CLI holds it, train() takes it too)
            assert inner.stale == outer.stale
        assert (tmp_path / LOCK_FILE).read_text() != ""  # still held by the outer hold
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_without_flock_a_live_holders_record_still_refuses(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename,
                                                  "started": "then", "command": "metarl train"}))
    with pytest.raises(RunLocked, match=f"pid {os.getppid()} on host"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 17, "host": os.uname().nodename}))
    with RunLock(tmp_path) as lock:  # a dead holder's record: taken over
        assert lock.stale["pid"] == 2**22 + 17


# -- divergence ------------------------------------------------------------------------------------------------

def test_a_diverging_run_stops_with_one_line_keeps_its_last_good_checkpoint_and_writes_strict_json(tmp_path):
    run_dir = tmp_path / "run"
    proc = metarl(*train_args(run_dir, 8, "init_log_std=100", "max_bad_iterations=2"), cwd=tmp_path)
    assert proc.returncode == cli.EXIT_DIVERGED
    line = one_line_error(proc.stderr)
    assert "training diverged: returns/post_adaptation is nan at iterations 1-2" in line
    assert "init_log_std=100" in line and "last good checkpoint (iteration 0)" in line
    assert checkpoint_iteration(run_dir) == 0
    records = strict_records(run_dir)
    assert [r["iteration"] for r in records] == [1, 2] and records[0]["returns/post_adaptation"] is None
    # The kept checkpoint evaluates, and eval.json holds its NaN returns as null: strict JSON too.
    evaluated = metarl("eval", str(run_dir), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    returns = json.loads((run_dir / "eval.json").read_text(), parse_constant=lambda c: 1 / 0)["returns"]
    assert math.isfinite(returns["return_step_0"]) and returns["return_step_1"] is None


def metrics(iteration: int, kl: float = 0.01, accepted: float = 1.0) -> dict:
    return {"iteration": iteration, "returns/pre_adaptation": -1.0, "returns/post_adaptation": -0.5,
            "trpo/surrogate_before": 0.1, "trpo/kl": kl, "trpo/grad_norm": 1.0, "trpo/surrogate_after": 0.05,
            "trpo/step_accepted": accepted}


def test_divergence_watch_counts_consecutive_bad_iterations_only():
    watch = DivergenceWatch(Config(max_bad_iterations=3))
    assert watch.check(metrics(1, kl=math.nan)) == ("trpo/kl", None)
    watch.check(metrics(2, kl=math.inf))
    assert watch.check(metrics(3)) == (None, None)  # a finite iteration ends the streak
    watch.check(metrics(4, kl=math.nan))
    watch.check(metrics(5, kl=math.nan))
    with pytest.raises(Diverged, match=r"trpo/kl is nan at iterations 4-6 \(max_bad_iterations=3\); likely cause"):
        watch.check(metrics(6, kl=math.nan))
    with pytest.raises(Diverged, match="at iteration 7 .the run's last iteration"):  # the result would be NaN
        DivergenceWatch(Config()).check(metrics(7, kl=math.nan), last=True)
    off = DivergenceWatch(Config(max_bad_iterations=0))
    assert [off.check(metrics(i, kl=math.nan), last=True)[0] for i in range(1, 6)] == [None] * 5


def test_rejected_steps_warn_once_on_the_console_and_in_the_log(tmp_path, capsys):
    overrides = parse_overrides([*TINY, "max_kl=1e10", "warn_rejected_iterations=2", "eval_every=0"])
    cfg = run.resolve_config("nav2d", None, overrides, {"iterations": 4})
    run_dir = run.create_run(cfg, tmp_path / "run")
    run.train(run_dir, cfg, bar=False)
    warnings = [r for r in strict_records(run_dir) if "warning" in r]
    assert len(warnings) == 1 and warnings[0]["iteration"] == 2
    assert "every TRPO step of the last 2 iterations (1-2) was rejected" in warnings[0]["warning"]
    assert "max_kl=1e+10" in warnings[0]["warning"]
    assert capsys.readouterr().out.count("was rejected") == 1


# -- permissions, refused resumes, disk errors -----------------------------------------------------------------

def make_read_only(folder: Path) -> None:
    """A folder nobody may add files to: chmod for a user, the immutable attribute for root (who ignores modes)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: no folder is read-only to root here")


def make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    else:
        folder.chmod(0o755)


def test_a_read_only_run_directory_is_one_line_before_any_work(small_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir)
    before = checksums(run_dir)
    make_read_only(run_dir)
    try:
        resumed = metarl("train", "--resume", str(run_dir), "--iterations", "5", cwd=tmp_path)
        evaluated = metarl("eval", str(run_dir), cwd=tmp_path)
    finally:
        make_writable(run_dir)
    for proc in (resumed, evaluated):
        assert proc.returncode == 2
        assert f"to {str(run_dir)!r}" in one_line_error(proc.stderr)
    assert "mean return" not in evaluated.stdout  # refused before evaluating, not after
    assert checksums(run_dir) == before


def test_a_refused_resume_changes_no_file(small_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("hidden_sizes: [16, 16]", "hidden_sizes: [8]"))  # no longer fits the checkpoint
    before = checksums(run_dir)
    proc = metarl("train", "--resume", str(run_dir), "--iterations", "9", cwd=tmp_path)
    assert proc.returncode == 2 and "does not fit config.yaml" in one_line_error(proc.stderr)
    assert checksums(run_dir) == before  # iterations: still 2


def test_a_full_disk_mid_run_is_one_line_and_the_checkpoint_stays_whole(tmp_path, monkeypatch, capsys):
    saves = []
    real_save = run.save_checkpoint

    def filling_disk(run_dir, state, last_eval):
        saves.append(int(state["iteration"]))
        if len(saves) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "checkpoint.pt.tmp"))
        real_save(run_dir, state, last_eval)

    monkeypatch.setattr(training, "save_checkpoint", filling_disk)  # what the training loop calls
    run_dir = tmp_path / "run"
    code = cli.main(train_args(run_dir, 6))
    assert code == cli.EXIT_OS
    line = one_line_error(capsys.readouterr().err)
    assert "No space left on device" in line and "the last checkpoint is intact" in line
    assert checkpoint_iteration(run_dir) == saves[1]  # the last save that completed
