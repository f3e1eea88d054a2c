"""`metarl branch`: a run continued from another run's kept checkpoint with settings changed
(metarl.experiments.branch)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from metarl import runs as run
from metarl.cli import main as metarl_main
from metarl.config import load_config
from metarl.experiments import report
from metarl.experiments.branch import BRANCH_FILE, branch_run
from metarl.experiments.sweep import TIMING_FILE
from metarl.runs import create_run, preset_path, train

TINY = {"meta_batch_size": 3, "episodes_per_task": 3, "horizon": 15, "iterations": 4, "eval_every": 2,
        "eval_tasks": 3, "eval_episodes_per_task": 3, "eval_steps": 1, "hidden_sizes": [8, 8],
        "keep_checkpoint_every": 1, "sampler_threads": 1, "update_threads": 1, "algo": "maml", "seed": 3,
        "outer": "promp", "estimator": "lvc"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    cfg = load_config(preset_path("nav2d"), TINY)
    path = create_run(cfg, tmp_path_factory.mktemp("branch") / "source")
    train(path, cfg, bar=False)
    return path


def _results(metrics: list[dict]) -> list[dict]:
    """The metrics without the timings (which differ from sitting to sitting)."""
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in metrics]


def _state(path):
    return run.load_checkpoint(path)["trainer"]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_a_branch_without_a_change_continues_exactly_as_its_source(source, tmp_path):
    made = branch_run(source, 2, tmp_path / "same", {})
    assert made.changed == {} and run.checkpoint_iteration(run.load_checkpoint(made.path)) == 2
    train(*run.prepare_resume(made.path), bar=False)
    assert _same(_state(made.path), _state(source))  # policy, ProMP's Adam moments, generators: bit for bit
    assert _results(run.read_metrics(made.path)) == _results(run.read_metrics(source))


def test_a_branch_with_a_change_starts_from_the_checkpoint_and_records_where_it_came_from(source, tmp_path, capsys):
    out = tmp_path / "kl"
    (tmp_path / "commands.txt").write_text("metarl sweep --root ROOT\n")  # branched into a sweep's root
    assert metarl_main(["branch", str(source), "--at", "2", "--out", str(out), "--set", "promp_max_kl=1e-6",
                        "iterations=5"]) == 0
    assert (tmp_path / "commands.txt").read_text().splitlines() == [
        "metarl sweep --root ROOT",
        f"metarl branch {source} --at 2 --out {out} --set promp_max_kl=1e-6 iterations=5"]
    printed = capsys.readouterr().out
    assert f"branched {source} at iteration 2 into {out} (promp_max_kl None -> 1e-06, iterations 4 -> 5)" in printed
    cfg = load_config(out / run.CONFIG_FILE)
    assert cfg.promp_max_kl == 1e-6 and cfg.iterations == 5 and cfg.seed == 3
    record = json.loads((out / BRANCH_FILE).read_text())
    assert record == {"source": str(source), "iteration": 2,
                      "changed": {"promp_max_kl": {"from": None, "to": 1e-6}, "iterations": {"from": 4, "to": 5}}}
    assert [p.name for p in run.kept_checkpoints(out)] == ["iteration-000001.pt", "iteration-000002.pt"]
    kept = run.read_metrics(out)
    assert kept == [m for m in run.read_metrics(source) if m["iteration"] <= 2]
    assert any("eval/return_step_1" in m for m in kept)  # iteration 2's evaluation came along
    timing = json.loads((out / TIMING_FILE).read_text())
    first = timing["sittings"][0]
    assert (first["from_iteration"], first["to_iteration"], first["branched_from"]) == (0, 2, str(source))
    assert first["train_s"] == pytest.approx(sum(m["time/iteration_s"] for m in kept if "time/iteration_s" in m))

    report.publish_files(out, tmp_path / "published")  # where it came from goes with a published run
    assert json.loads((tmp_path / "published" / BRANCH_FILE).read_text()) == record

    train(*run.prepare_resume(out), bar=False)
    theirs = {m["iteration"]: m for m in run.read_metrics(source) if "returns/post_adaptation" in m}
    ours = {m["iteration"]: m for m in run.read_metrics(out) if "returns/post_adaptation" in m}
    assert sorted(ours) == [1, 2, 3, 4, 5]
    assert ours[3]["returns/pre_adaptation"] == theirs[3]["returns/pre_adaptation"]  # sampled before any update
    assert ours[4]["returns/pre_adaptation"] != theirs[4]["returns/pre_adaptation"]  # the tiny region acted at 3
    from metarl.experiments.records import collect_runs
    from metarl.experiments.tables import timing_table

    row = next(line for line in timing_table(collect_runs(tmp_path)) if line.startswith("| kl |"))
    assert row.startswith("| kl | 5/5 |") and row.endswith("| 1 (branched) |")  # its first sitting: the source's


def test_a_branch_is_refused_in_one_line_where_it_cannot_be_made(source, tmp_path, capsys):
    with pytest.raises(run.RunError, match=r"kept no checkpoint of iteration 7; allowed: 1, 2, 3, 4"):
        branch_run(source, 7, tmp_path / "a", {})
    with pytest.raises(run.RunError, match=r"would end at iteration 4, not after 4"):
        branch_run(source, 4, tmp_path / "a", {})
    with pytest.raises(run.RunError, match=r"cannot continue with --set hidden_sizes=\[16, 16\]"):
        branch_run(source, 2, tmp_path / "a", {"hidden_sizes": [16, 16]})
    assert not (tmp_path / "a").exists()  # nothing written by a refused branch
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(run.RunError, match="already exists and is not empty"):
        branch_run(source, 2, tmp_path / "taken", {})
    published = tmp_path / "published" / "source"
    shutil.copytree(source, published)
    report.compact_published(published.parent, keep_every=2)
    with pytest.raises(run.RunError, match=r"holds the policy alone .* at its last iteration \(4\)"):
        branch_run(published, 2, tmp_path / "b", {})
    assert metarl_main(["branch", str(source), "--at", "2", "--out", str(tmp_path / "c"), "--set", "inner_lr=-1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
