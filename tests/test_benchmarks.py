"""Smoke tests of the benchmark scripts: they run and write complete reports (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "env_throughput.py"


def test_env_throughput_quick_run_writes_positive_rates(tmp_path):
    out = tmp_path / "x.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeats", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert {"date", "command", "machine", "config", "statistic", "results", "ratios"} <= set(report)
    assert {"platform", "cpu_count", "python", "numpy", "mujoco", "gymnasium",
            "load_average_at_start"} <= set(report["machine"])
    assert "--quick" in report["command"] and report["config"]["quick"] is True
    measured = {"batched_T1", "batched_T2", "raw_mj_step", "naive_sync_vector"}
    assert set(report["results"]) == measured
    for name, result in report["results"].items():
        assert result["steps_per_s"] > 0, name
        assert len(result["all_steps_per_s"]) == 2 and all(rate > 0 for rate in result["all_steps_per_s"])
    assert set(report["ratios"]) == {f"batched_T{t}/{base}" for t in (1, 2) for base in ("raw", "naive")}
    assert all(ratio > 0 for ratio in report["ratios"].values())
    for name in measured:
        assert name in done.stdout  # the table is printed too


def test_performance_benchmark_quick_run_writes_its_table(tmp_path):
    out = tmp_path / "perf"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "performance.py"), "--quick", "--repeats", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    for key in ("metarl_over_raw", "metarl_over_naive"):
        assert result["sampler"][key] > 0
    for algo in ("maml", "anil"):
        assert result["iteration"][algo]["time/iteration_s"] > 0 and result["iteration"][algo]["peak_rss_mb"] > 0
    assert set(result["scaling"]) == {"meta_batch_size", "horizon"}
    assert "| MAML meta-iteration" in out.with_suffix(".md").read_text()


def test_nav2d_unit_action_variant_scales_actions_by_a_tenth_and_keeps_the_contract():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import nav2d_protocols as np_
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    import numpy as np

    from metarl.envs import Nav2DTask, check_family
    check_family(np_.UnitActionNavigation2DEnv, "nav2d-unit-actions")
    task = Nav2DTask((0.3, -0.2))
    env = np_.UnitActionNavigation2DEnv()
    env.reset(options={"task": task})
    obs, reward, *_ = env.step(np.array([0.5, -3.0]))  # 0.1 * clip(action, -1, 1)
    np.testing.assert_allclose(obs, [0.05, -0.1], atol=1e-7)
    assert np.isclose(reward, -np.hypot(0.05 - 0.3, -0.1 + 0.2), rtol=1e-12)
    batch = np_.UnitActionNavigation2DBatch(2)
    batch.set_attr("task", [task, task])
    batch.reset(seed=0)
    obs, rewards, *_ = batch.step(np.array([[0.5, -3.0], [-1.0, 1.0]]))
    np.testing.assert_allclose(obs, [[0.05, -0.1], [-0.1, 0.1]], atol=1e-7)
    assert batch.single_action_space.high.tolist() == [1.0, 1.0] and np.isclose(rewards[0], reward, rtol=1e-12)
