"""Smoke tests of the benchmark scripts: they run and write complete reports (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "env_throughput.py"


def _import_benchmark(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_env_throughput_quick_run_writes_positive_rates(tmp_path):
    out = tmp_path / "x.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeats", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert {"date", "command", "machine", "config", "statistic", "results", "ratios"} <= set(report)
    assert {"platform", "cpu", "cpus", "cpu_features", "python", "numpy", "mujoco", "gymnasium",
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


def test_family_throughput_quick_run_measures_each_family_against_its_floor(tmp_path):
    bench = _import_benchmark("family_throughput")
    report = bench.main(["--quick", "--repeats", "1", "--families", "ant-vel", "hopper-params",
                         "--out", str(tmp_path / "f")])
    assert set(report["results"]) == {"ant-vel", "hopper-params"}
    for r in report["results"].values():
        assert r["metarl_steps_per_s"] > 0 and r["floor_steps_per_s"] > 0
        assert r["over_floor"] == pytest.approx(r["floor_steps_per_s"] / r["metarl_steps_per_s"])
    table = (tmp_path / "f.md").read_text()
    assert "| `ant-vel` | 1 |" in table and "| `hopper-params` | 4 |" in table and "vector units " in table


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
        # the default's loop (ProMP) and, measured beside it, the papers' TRPO (issue 52)
        assert (result["iteration"][algo]["outer"], result["iteration_paper"][algo]["outer"]) == ("promp", "trpo")
        assert result["iteration"][algo]["update_over_paper"] == pytest.approx(
            result["iteration"][algo]["time/update_s"] / result["iteration_paper"][algo]["time/update_s"])
    assert set(result["scaling"]) == {"meta_batch_size", "horizon"}
    assert "| MAML meta-iteration" in out.with_suffix(".md").read_text()


def test_fvp_chunks_quick_run_reports_every_chunk_and_agrees_with_the_whole_batch(tmp_path):
    out = tmp_path / "chunks"
    _import_benchmark("fvp_chunks").main(["--quick", "--products", "1", "--threads", "1", "--precision",
                                                "float32", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["fvp_precision"] == "float32"
    cases = [(r["algo"], r["task_chunk"]) for r in result["rows"]]
    assert cases == [(algo, chunk) for algo in ("maml", "anil") for chunk in (4, 2, 1)]
    for row in result["rows"]:
        assert row["setup_s"] > 0 and row["fvp_s"] > 0
        assert row["max_rel_diff"] < 1e-4  # float32 rounding only: the chunks sum to the same Fisher
    assert out.with_suffix(".md").read_text().count("| maml |") == 3


def test_update_threads_child_times_updates_at_the_requested_thread_count(capsys):
    update_threads = _import_benchmark("update_threads")
    update_threads.child("1", updates=2, quick=True)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["update_s"]) == 2 and all(t > 0 for t in result["update_s"])
    assert result["threads"] == [1, 1] and result["torch_threads_seen"] == 1  # the configured thread count


def test_estimator_time_quick_run_times_every_variant_of_both_algorithms(tmp_path):
    out = tmp_path / "est"
    _import_benchmark("estimator_time").main(["--quick", "--rounds", "1", "--threads", "1", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    for algo in ("anil", "maml"):
        variants = result["algos"][algo]["variants"]
        assert [(v["estimator"], v["outer"]) for v in variants] == [("reinforce", "trpo"), ("lvc", "trpo"),
                                                                    ("dice", "trpo"), ("lvc", "promp")]
        assert all(v["update_s"] > 0 for v in variants)
    assert out.with_suffix(".md").read_text().count("| MAML |") == 4
    # the table names the machine as every benchmark does: processor, cores and the vector units timings depend on
    from metarl.common import provenance

    machine = result["machine"]
    assert machine["cpus"] >= 1 and machine["cpu_features"] == provenance.vector_features()
    assert provenance.machine_line(machine) in out.with_suffix(".md").read_text()


def test_machine_line_names_the_vector_units_and_reads_older_records():
    from metarl.common.provenance import machine_line

    line = machine_line({"cpu": "AMD EPYC", "cpus": 2, "cpu_features": ["avx", "avx2", "fma"], "torch": "2.13.0",
                         "mujoco": "4.0.1"})
    assert line == "AMD EPYC, 2 CPUs, vector units avx+avx2+fma (no AVX-512), torch 2.13.0, MuJoCo 4.0.1"
    assert "no AVX-512" not in machine_line({"cpu": "x", "cpus": 4, "cpu_features": ["avx2", "avx512f"]})
    assert machine_line({"cpu_count": 2, "torch": "2.4"}) == "a CPU, 2 CPUs, torch 2.4"  # an older result's keys


def test_inner_optimizer_time_quick_run_times_every_depth_study_variant_against_shallow_sgd(tmp_path):
    out = tmp_path / "iot"
    _import_benchmark("inner_optimizer_time").main(["--quick", "--rounds", "1", "--threads", "1", "--out", str(out)])
    rows = json.loads(out.with_suffix(".json").read_text())["envs"]["nav2d"]
    assert list(rows) == ["depth1", "depth2", "depth4", "depth1-meta-sgd", "depth1-kfo"]
    assert all(len(r["iteration_s_runs"]) == 1 and r["iteration_s"] >= r["update_s"] > 0 for r in rows.values())
    table = out.with_suffix(".md").read_text()
    assert "| nav2d | depth1 |" in table and table.count("| nav2d |") == 5 and "1.00x | 1.00x |" in table


def test_scaling_model_is_the_stated_ring_all_reduce_cost_and_its_table_reads_the_measurements():
    scaling = _import_benchmark("scaling")
    # n = 1: the work alone; n ranks: W / n + c * (2 (n - 1) alpha + 2 (n - 1) / n * b * beta)
    assert scaling.model(10.0, 30, 400.0, 1e-4, 1e-9, 1) == 10.0
    expected = 10.0 / 4 + 30 * (2 * 3 * 1e-4 + 2 * 3 / 4 * 400.0 * 1e-9)
    assert scaling.model(10.0, 30, 400.0, 1e-4, 1e-9, 4) == pytest.approx(expected)
    times = {"1 process x 2 threads": 6.0, "1 process x 1 thread": 10.0, "2 ranks x 1 thread": 5.5}
    result = {"command": "python benchmarks/scaling.py", "date": "today", "iterations": 2, "overrides_text": "",
              "machine": {"cpu": "AMD EPYC", "cpus": 2}, "probe": {"small_s": 2e-4, "large_s": 3e-4, "large_bytes": 51200},
              "alpha_s": 1e-4, "beta_s_per_byte": 2e-9,
              "algos": {"anil": {"iteration_s": times, "collectives": 30, "bytes": 12000.0,
                                 "model": {str(n): scaling.model(10.0, 30, 400.0, 1e-4, 2e-9, n)
                                           for n in scaling.RANKS}}}}
    md = scaling.markdown(result)
    assert "| ANIL | 6.00 | 10.00 | 5.50 | 1.09x | 30 | 12 |" in md
    assert f"| {result['algos']['anil']['model']['2']:.2f} / 5.50 |" in md


def test_device_speed_quick_run_on_the_cpu_times_the_iteration_and_the_update(tmp_path):
    out = tmp_path / "dev"
    _import_benchmark("device_speed").main(["--devices", "cpu", "--quick", "--iterations", "1", "--repeats", "1",
                                            "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert [(r["algo"], r["device"]) for r in result["runs"]] == [("anil", "cpu"), ("maml", "cpu")]
    for r in result["runs"]:
        assert r["iteration_s"] >= r["update_s"] > 0 and r["update_alone_s"] > 0 and r["bf16_fvp_update_alone_s"] > 0
        assert r["peak_gpu_mb"] is None and r["peak_rss_mb"] > 0
    assert "--out" not in result["command"]  # the command that reproduces the table
    assert out.with_suffix(".md").read_text().count("| cpu |") == 2
