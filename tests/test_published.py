"""Published runs in their compact form (metarl.experiments.report.publish_files): gzipped metrics at float32's
precision and policy-only snapshots that evaluation, analysis and the report read as they read a live run, PPO
baselines kept as their actor, and a tracked tree that stays within its budget."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import runs as run
from metarl.config import load_config
from metarl.experiments import analysis, publish, report
from metarl.runs import create_run, evaluate_run, preset_path, train
from metarl.runs.metrics import PACKED_DIGITS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The tracked tree's budget (issue 53): a clone stays light and a command sent to a GPU machine (64 MiB with the
# wheels it carries) has room; the new families' grids must fit in what is left.
TREE_BUDGET_MIB = 25
TINY = {"meta_batch_size": 3, "episodes_per_task": 3, "horizon": 15, "iterations": 4, "eval_every": 2,
        "eval_tasks": 3, "eval_episodes_per_task": 3, "eval_steps": 1, "hidden_sizes": [8, 8],
        "keep_checkpoint_every": 1, "sampler_threads": 1, "update_threads": 1, "algo": "anil", "seed": 2}


def test_a_compacted_run_evaluates_and_analyses_as_the_original_and_refuses_to_resume(tmp_path):
    cfg = load_config(preset_path("nav2d"), TINY)
    original = create_run(cfg, tmp_path / "run")
    train(original, cfg, bar=False)
    evaluation = evaluate_run(original, out=tmp_path / "eval.json")
    copy = tmp_path / "published" / "run"
    shutil.copytree(original, copy)
    assert report.compact_published(tmp_path / "published", keep_every=2) == [copy]
    assert report.compact_published(tmp_path / "published", keep_every=2) == []  # already compact: unchanged
    assert not (copy / run.METRICS_FILE).exists() and (copy / run.METRICS_ARCHIVE).is_file()
    assert_packed_metrics(run.read_metrics(copy), run.read_metrics(original))
    # the last snapshot (iteration 4) is checkpoint.pt's own policy: kept once, as checkpoint.pt
    assert [p.name for p in run.kept_checkpoints(original)] == [f"iteration-00000{i}.pt" for i in (1, 2, 3, 4)]
    assert [p.name for p in run.kept_checkpoints(copy)] == ["iteration-000002.pt"]
    assert (copy / "checkpoints" / "iteration-000002.pt").stat().st_size < \
        (original / "checkpoints" / "iteration-000002.pt").stat().st_size
    assert evaluate_run(copy, out=tmp_path / "again.json").data["returns"] == evaluation.data["returns"]
    quiet = {"progress": lambda text: None, "figures": False, "every": 2}
    ours = analysis.analyze_run(copy, out=tmp_path / "a", **quiet)["training"]
    theirs = analysis.analyze_run(original, out=tmp_path / "b", **quiet)["training"]
    assert ours == theirs and [row["iteration"] for row in ours] == [2, 4]
    # continued, the copy keeps the snapshot it starts from again, the full checkpoint of iteration 4
    more = tmp_path / "continued"
    shutil.copytree(copy, more)
    path, longer, ckpt = run.prepare_resume(more, 5)
    train(path, longer, ckpt, bar=False)
    assert [p.name for p in run.kept_checkpoints(more)] == [f"iteration-00000{i}.pt" for i in (2, 4, 5)]
    assert (more / "checkpoints" / "iteration-000004.pt").read_bytes() == \
        (original / "checkpoints" / "iteration-000004.pt").read_bytes()
    # a policy-only snapshot holds no optimiser or generator state: training cannot continue from it
    shutil.copyfile(copy / "checkpoints" / "iteration-000002.pt", copy / run.CHECKPOINT_FILE)
    with pytest.raises(run.RunError, match="holds the policy alone .* resume from a run's own checkpoint.pt"):
        run.prepare_resume(copy, 6)


def assert_packed_metrics(packed: list[dict], original: list[dict]) -> None:
    """Packed metrics hold every record and key of the original, each number within PACKED_DIGITS significant digits
    of it, and every value that was a float32 (the losses and returns) the same float32."""
    assert [sorted(r) for r in packed] == [sorted(r) for r in original]
    for ours, theirs in zip(packed, original):
        for key, value in theirs.items():
            if isinstance(value, float) and math.isfinite(value):
                assert math.isclose(ours[key], value, rel_tol=10 ** (1 - PACKED_DIGITS)), key
                if float(np.float32(value)) == value:
                    assert np.float32(ours[key]) == np.float32(value), key
            else:
                assert ours[key] == value or (value != value and ours[key] != ours[key]), key


def test_packed_metrics_keep_float32_values_and_shrink_the_archive(tmp_path):
    values = np.random.default_rng(0).standard_normal(2000).astype(np.float32)
    original = [{"iteration": i + 1, "loss": float(v), "time/s": 1.0 / (i + 3), "kl": [float(v), 2.5],
                 "missing": None} for i, v in enumerate(values)]
    (tmp_path / run.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in original) + '{"iteration": 9')
    plain = len(gzip.compress((tmp_path / run.METRICS_FILE).read_bytes(), compresslevel=9, mtime=0))
    archive = run.pack_metrics(tmp_path)
    (tmp_path / run.METRICS_FILE).unlink()
    packed = run.read_metrics(tmp_path)  # the line cut short is kept in the archive and skipped here, as before
    assert [np.float32(r["loss"]) for r in packed] == list(values)
    assert [np.float32(r["kl"][0]) for r in packed] == list(values) and all(r["kl"][1] == 2.5 for r in packed)
    assert all(math.isnan(r["missing"]) for r in packed)
    assert all(math.isclose(r["time/s"], 1.0 / (r["iteration"] + 2), rel_tol=1e-8) for r in packed)
    assert archive.stat().st_size < 0.8 * plain
    before = archive.read_bytes()
    run.pack_metrics(tmp_path)  # packing a packed archive again changes nothing
    assert archive.read_bytes() == before


def test_a_published_copy_continues_training_with_its_gzipped_metrics(tmp_path):
    cfg = load_config(preset_path("nav2d"), {**TINY, "iterations": 2})
    original = create_run(cfg, tmp_path / "run")
    train(original, cfg, bar=False)
    copy = tmp_path / "copy"
    report.publish_files(original, copy)
    train(*run.prepare_resume(copy, 3), bar=False)
    assert not (copy / run.METRICS_ARCHIVE).exists()  # unpacked to be appended to
    assert [m["iteration"] for m in run.read_metrics(copy) if "returns/post_adaptation" in m] == [1, 2, 3]


def test_a_published_ppo_baseline_is_its_actor_alone_and_is_reused_as_the_model_was(tmp_path, monkeypatch):
    from metarl.experiments import baselines, sweep

    cfg = load_config(preset_path("nav2d"), {"hidden_sizes": [8, 8]})
    root, dest = tmp_path / "root", tmp_path / "dest"
    (root / sweep.BASELINES_DIR).mkdir(parents=True)
    state, facts = sweep.pretrained_state(cfg, root, 0, 64, 1)  # trains PPO: the model, its actor, its facts kept
    kept = root / sweep.BASELINES_DIR / "nav2d-pretrained-seed0"
    model = kept.with_name(kept.name + sweep.PPO_MODEL_SUFFIX)
    actor = kept.with_name(kept.name + sweep.PPO_ACTOR_SUFFIX)
    assert model.is_file() and actor.is_file()
    from_model = baselines.ppo_policy_state(baselines.load_ppo(model), cfg)
    assert set(from_model) == set(state) == {"body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                                             "head.weight", "head.bias", "log_std"}
    assert all(torch.equal(from_model[k], state[k]) and torch.equal(baselines.load_actor(actor)[k], state[k])
               for k in state)

    dest.mkdir()
    report.publish_baselines(root, dest)
    published = sorted(p.name for p in (dest / sweep.BASELINES_DIR).iterdir())
    assert published == ["nav2d-pretrained-seed0.actor.pt", "nav2d-pretrained-seed0.ppo.json"]
    monkeypatch.setattr(baselines, "train_ppo", lambda *a, **k: pytest.fail("PPO retrained"))
    again, facts_again = sweep.pretrained_state(cfg, dest, 0, 64, 1)
    assert facts_again == facts and all(torch.equal(again[k], state[k]) for k in state)
    with pytest.raises(pytest.fail.Exception):  # another budget is another baseline: trained anew
        sweep.pretrained_state(cfg, dest, 0, 128, 1)

    actor.unlink()  # models published before actors were kept: compacted in place to their actors
    old = tmp_path / "old" / sweep.BASELINES_DIR
    shutil.copytree(root / sweep.BASELINES_DIR, old)
    shutil.copyfile(model, old / "nav2d-pretrained-seed1.zip")
    shutil.copyfile(kept.with_name(kept.name + sweep.PPO_FACTS_SUFFIX), old / "nav2d-pretrained-seed1.ppo.json")
    assert report.compact_published(tmp_path / "old") == [old]  # the folder, once
    assert sorted(p.name for p in old.iterdir() if "ppo" in p.name or "actor" in p.name) == [
        "nav2d-pretrained-seed0.actor.pt", "nav2d-pretrained-seed0.ppo.json",
        "nav2d-pretrained-seed1.actor.pt", "nav2d-pretrained-seed1.ppo.json"]
    compacted = baselines.load_actor(old / "nav2d-pretrained-seed0.actor.pt")
    assert all(torch.equal(compacted[k], state[k]) for k in state)


def test_every_published_run_in_the_repository_is_in_the_compact_form():
    plain = sorted(str(p.relative_to(REPO)) for p in RESULTS.rglob(run.METRICS_FILE))
    assert not plain, f"run `metarl publish --compact benchmarks/results` for: {plain[:3]}"
    snapshots = list(RESULTS.rglob("checkpoints/iteration-*.pt"))
    for snapshot in snapshots:
        assert report.snapshot_iteration(snapshot) % report.PUBLISHED_SNAPSHOT_EVERY == 0, snapshot
        ckpt = torch.load(snapshot, map_location="cpu", weights_only=True)
        assert run.is_policy_snapshot(ckpt), snapshot
    for run_dir in {snapshot.parent.parent for snapshot in snapshots}:  # once per run, not once per snapshot
        assert publish.repeated_snapshot(run_dir) is None, run_dir  # its last snapshot kept once, as checkpoint.pt


def test_the_tracked_tree_stays_within_its_budget():
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [REPO / name for name in listed.decode().split("\0") if name]
    sizes = {path: path.stat().st_size for path in files if path.is_file()}
    total = sum(sizes.values()) / 2**20
    largest = sorted(sizes, key=sizes.get, reverse=True)[:5]
    assert total <= TREE_BUDGET_MIB, (f"the tracked tree is {total:.1f} MiB, over its {TREE_BUDGET_MIB} MiB budget; "
                                      f"largest: {[str(p.relative_to(REPO)) for p in largest]}")


def test_a_figure_is_saved_as_a_palette_png_that_looks_the_same_and_weighs_less(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from metarl.experiments import figures

    def draw():
        fig, ax = figures.pyplot().subplots(figsize=(5, 3.5))
        x = np.linspace(0, 10, 400)
        for k in range(6):
            ax.plot(x, np.sin(x + k) * (k + 1), label=f"line {k}")
            ax.fill_between(x, np.sin(x + k) * k, np.sin(x + k) * (k + 2), alpha=0.25)
        ax.legend()
        return fig

    draw().savefig(tmp_path / "full.png", dpi=110)
    assert figures.save_figure(draw(), tmp_path / "small.png", dpi=110) == tmp_path / "small.png"
    with Image.open(tmp_path / "full.png") as full, Image.open(tmp_path / "small.png") as small:
        assert small.mode == "P" and small.size == full.size
        ours = np.asarray(small.convert("RGB"), dtype=float)
        theirs = np.asarray(full.convert("RGB"), dtype=float)
    off = np.abs(ours - theirs)  # the same to the eye: on average under a level of 255, a few edge pixels more
    assert off.mean() < 1.0 and np.percentile(off, 99.9) < 32, (off.mean(), np.percentile(off, 99.9))
    assert (tmp_path / "small.png").stat().st_size < 0.7 * (tmp_path / "full.png").stat().st_size
    assert not list(tmp_path.glob("*.tmp"))


def test_every_tracked_figure_is_a_palette_png():
    pytest.importorskip("PIL")
    from PIL import Image

    for path in sorted(RESULTS.rglob("*.png")):
        with Image.open(path) as image:
            assert image.mode == "P", f"{path.relative_to(REPO)}: save it with figures.save_figure (compact_png)"
