"""Data-parallel meta-training on torch.distributed (gloo): 2 ranks give one process's run, resume across rank
counts, and a rank that dies ends the launch at once with one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metarl.config import load_config
from metarl.distributed import World
from metarl.runs import create_run, prepare_resume, preset_path, train

TINY = {"meta_batch_size": 5, "episodes_per_task": 3, "horizon": 15, "eval_every": 0, "eval_tasks": 2,
        "eval_episodes_per_task": 2, "eval_steps": 1, "hidden_sizes": [8, 8], "sampler_threads": 1,
        "update_threads": 1, "dtype": "float64"}
COMPARED = ("returns/pre_adaptation", "returns/post_adaptation", "trpo/surrogate_before", "trpo/surrogate_after",
            "trpo/kl", "trpo/grad_norm")
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def _sets(cfg: dict) -> list[str]:
    return [f"{k}={json.dumps(v).replace(' ', '')}" for k, v in cfg.items()]


def _torchrun(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "metarl", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The launch's output once it ends; if it has not ended within `timeout` s, every process of it is killed (none
    is left behind) and the test fails."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"the torchrun launch did not end within {timeout} s") from None


def _iterations(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "returns/post_adaptation" in line]


def test_more_ranks_than_tasks_is_refused_with_the_reason():
    from metarl.distributed import problem

    cfg = load_config(preset_path("nav2d"), {**TINY, "meta_batch_size": 2})
    assert "3 ranks for a meta-batch of 2 tasks" in problem(World(0, 3), cfg)
    assert problem(World(0, 2), cfg) is None and problem(World(), cfg) is None


def test_each_rank_takes_a_contiguous_share_of_the_tasks():
    shares = [World(rank, 3).tasks(8) for rank in range(3)]
    assert [(s.start, s.stop) for s in shares] == [(0, 3), (3, 6), (6, 8)]
    assert World().tasks(8) == slice(0, 8)


@pytest.mark.parametrize("algo,outer", [("anil", "trpo"), ("maml", "trpo"), ("anil", "promp")])
def test_two_ranks_give_one_processs_run_and_a_run_resumes_on_another_number_of_ranks(algo, outer, tmp_path):
    extra = {"outer": outer, "estimator": "lvc"} if outer == "promp" else {}
    cfg = load_config(preset_path("nav2d"), {**TINY, **extra, "algo": algo, "seed": 2, "iterations": 3})
    alone = create_run(cfg, tmp_path / "alone")
    train(alone, cfg, bar=False)
    ranks = tmp_path / "ranks"
    proc = _torchrun(["train", "--env", "nav2d", "--algo", algo, "--seed", "2", "--iterations", "2", "--run-dir",
                      str(ranks), "--set", *_sets({**TINY, **extra})], start_new_session=True)
    out, err = _finish(proc, 240)
    assert proc.returncode == 0, err[-2000:]
    assert "training on 2 ranks: 5 tasks split between them" in out
    train(*prepare_resume(ranks, 3), bar=False)  # the third iteration in one process
    expected, got = _iterations(alone), _iterations(ranks)
    assert [m["iteration"] for m in got] == [1, 2, 3] and [m["env_steps"] for m in got] == [
        m["env_steps"] for m in expected]
    keys = [k.replace("trpo/", f"{outer}/") for k in COMPARED]  # ProMP logs the same quantities
    for a, b in zip(expected, got):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-12), (a["iteration"], key)


def test_a_rank_that_dies_ends_the_launch_with_one_line_and_the_checkpoint_intact(tmp_path):
    run_dir = tmp_path / "run"
    proc = _torchrun(["train", "--env", "nav2d", "--iterations", "1000", "--run-dir", str(run_dir), "--set",
                      *_sets({**TINY, "dtype": "float32", "checkpoint_every": 1})], start_new_session=True)
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or len(_iterations(run_dir)) < 2:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    rank1 = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_rank(int(p), "1", run_dir)]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGKILL)
    killed = time.time()
    out, err = _finish(proc, 60)
    assert proc.returncode != 0 and time.time() - killed < 60
    # Rank 0 either sees the collective fail first or is stopped by torchrun, which noticed the dead worker first
    # (during training: the interrupt's message; elsewhere: an error line): either way one line says how to resume.
    ours = [line for line in err.splitlines() if line.startswith(("metarl: error:", "interrupted: saved"))]
    assert len(ours) == 1, err[-3000:]
    assert "--resume" in ours[0] or "resume with" in err
    done = prepare_resume(run_dir)[2]["trainer"]["iteration"]  # the checkpoint loads: intact
    assert done >= 1
    leftover = [p for p in os.listdir("/proc") if p.isdigit() and _is_rank(int(p), "0", run_dir)]
    assert not leftover  # no process left behind


def _is_rank(pid: int, rank: str, run_dir: Path) -> bool:
    """Whether process `pid` is torchrun's worker of rank `rank` for the run in `run_dir`."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f"RANK={rank}".encode() in environ and str(run_dir).encode() in cmdline and b"torchrun" not in cmdline


def test_a_rank_that_hangs_ends_the_launch_after_the_collective_timeout(tmp_path):
    run_dir = tmp_path / "run"
    proc = _torchrun(["train", "--env", "nav2d", "--iterations", "1000", "--run-dir", str(run_dir), "--set",
                      *_sets({**TINY, "dtype": "float32"})], start_new_session=True,
                     env_extra={"METARL_DIST_TIMEOUT_S": "10"})
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or len(_iterations(run_dir)) < 2:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    rank0, rank1 = ([int(p) for p in os.listdir("/proc") if p.isdigit() and _is_rank(int(p), r, run_dir)]
                    for r in "01")
    os.kill(rank1[0], signal.SIGSTOP)  # alive but silent: only the timeout can tell
    stopped = time.time()
    while os.path.exists(f"/proc/{rank0[0]}") and time.time() - stopped < 90:  # rank 0 ends after the timeout
        time.sleep(0.2)
    assert time.time() - stopped < 90
    # torchrun then sends the silent rank SIGTERM and waits 30 s before SIGKILL; a stopped process only takes the
    # signal once it runs again, so let it run (a real hang would cost that grace period, not the test)
    os.kill(rank1[0], signal.SIGCONT)
    out, err = _finish(proc, 90)
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("metarl: error:")]
    assert len(ours) == 1 and "another rank stopped or hung" in ours[0]
    assert prepare_resume(run_dir)[2]["trainer"]["iteration"] >= 1
