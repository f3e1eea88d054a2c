"""`metarl analyze`: what an inner step changes, layer by layer, and the freezing test against the evaluation."""

import json

import pytest
import torch

from metarl.algorithm.policy import GaussianMLP, forward, layer_outputs, layers, meta_params
from metarl.cli import main
from metarl.config import load_config
from metarl.experiments import analysis
from metarl.runs import create_run, evaluate_run, preset_path, train

TINY = {"meta_batch_size": 3, "episodes_per_task": 3, "horizon": 15, "iterations": 2, "eval_every": 0,
        "eval_tasks": 3, "eval_episodes_per_task": 3, "eval_steps": 2, "hidden_sizes": [8, 8],
        "keep_checkpoint_every": 1, "sampler_threads": 1, "update_threads": 1}


@pytest.fixture(scope="module", params=["anil", "maml"])
def analysed(request, tmp_path_factory):
    """A tiny trained nav2d run of each algorithm and its analysis (files in the run directory)."""
    cfg = load_config(preset_path("nav2d"), {**TINY, "algo": request.param, "seed": 3})
    run_dir = create_run(cfg, tmp_path_factory.mktemp(request.param) / "run")
    train(run_dir, cfg, bar=False)
    return run_dir, analysis.analyze_run(run_dir, progress=lambda text: None)


def test_layer_outputs_end_in_the_policy_mean_and_layers_cover_every_parameter():
    policy = GaussianMLP(3, 2, (5, 4), generator=torch.Generator().manual_seed(0))
    obs = torch.randn(7, 3)
    params = meta_params(policy)
    out = layer_outputs(policy, params, obs)
    assert list(out) == ["hidden 1", "hidden 2", "head"]
    assert out["hidden 2"].shape == (7, 4) and (out["hidden 2"] >= 0).all()
    torch.testing.assert_close(out["head"], forward(policy, params, obs)[0])
    assert sorted(k for keys in layers(policy).values() for k in keys) == sorted(params)
    sets = analysis.freezing_sets(policy)
    assert list(sets) == ["head", "hidden 2 + head", "hidden 1-2 + head", "all"]
    assert sets["head"] == ["head.weight", "head.bias"]
    assert sorted(sets["all"]) == sorted(params) and "log_std" not in sets["hidden 1-2 + head"]


def test_anil_leaves_the_body_identical_and_changes_only_the_head(analysed):
    run_dir, data = analysed
    sim = data["similarity"]
    if data["algo"] == "anil":
        for layer in ("hidden 1", "hidden 2"):
            assert sim["cka"][layer] == pytest.approx([1.0, 1.0], abs=1e-9)
            assert sim["svcca"][layer] == pytest.approx([1.0, 1.0], abs=1e-9)
            assert sim["param_change"][layer] == [0.0, 0.0]
        assert sim["param_change"]["log_std"] == [0.0, 0.0]
    else:  # MAML's inner step moves every layer
        for layer in ("hidden 1", "hidden 2", "head", "log_std"):
            assert min(sim["param_change"][layer]) > 0
        assert min(sim["cka"]["hidden 1"]) < 1 - 1e-9
    assert min(sim["param_change"]["head"]) > 0
    assert all(0 <= v <= 1 + 1e-9 for m in ("cka", "svcca") for vs in sim[m].values() for v in vs)
    assert len(sim["per_task"]) == 3 and data["wall_s"] > 0


def test_freezing_with_the_trained_set_is_the_evaluation(analysed):
    run_dir, data = analysed
    trained = "all" if data["algo"] == "maml" else "head"
    evaluation = evaluate_run(run_dir, steps=2, out=run_dir / "eval-check.json").data["returns"]  # metarl eval's
    assert data["freezing"][trained]["returns"] == [evaluation[f"return_step_{s}"] for s in range(3)]
    assert data["similarity"]["returns"] == data["freezing"][trained]["returns"]
    # every set starts from the same meta-policy on the same tasks: the same return before adapting
    assert len({r["returns"][0] for r in data["freezing"].values()}) == 1
    others = [r["returns"][1] for name, r in data["freezing"].items() if name != trained]
    assert any(v != data["freezing"][trained]["returns"][1] for v in others)


def test_analysis_follows_the_kept_snapshots_and_writes_its_files(analysed):
    run_dir, data = analysed
    assert [r["iteration"] for r in data["training"]] == [1, 2]
    assert data["training"][-1]["cka"] == data["similarity"]["cka"]
    assert data["training"][0]["cka"] != data["training"][1]["cka"]  # another snapshot, other policies
    saved = json.loads((run_dir / analysis.ANALYSIS_FILE).read_text())
    assert saved["freezing"] == data["freezing"]
    assert "| hidden 1 |" in (run_dir / analysis.MARKDOWN_FILE).read_text()
    for name in analysis.FIGURES.values():
        assert (run_dir / name).stat().st_size > 1000


def test_analyze_command_writes_to_out_and_refuses_bad_input(analysed, tmp_path, capsys):
    run_dir, _ = analysed
    out = tmp_path / "out"
    assert main(["analyze", str(run_dir), "--out", str(out), "--tasks", "2", "--snapshot-steps", "1",
                 "--no-figures"]) == 0
    data = json.loads((out / analysis.ANALYSIS_FILE).read_text())
    assert data["tasks"] == 2 and data["steps"] == 2
    assert [len(r["cka"]["head"]) for r in data["training"]] == [1, 2]  # the snapshot: one step; the final: all
    assert not (out / analysis.FIGURES["similarity"]).exists()
    assert "Layer freezing" in capsys.readouterr().out
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["analyze", str(run_dir), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metarl: error:") and len(err.strip().splitlines()) == 1


def test_analyze_without_matplotlib_writes_the_tables_and_says_the_figures_need_the_plots_extra(analysed, tmp_path,
                                                                                               monkeypatch, capsys):
    run_dir, _ = analysed
    monkeypatch.setattr(analysis, "has_matplotlib", lambda: False)  # as without the `plots` extra
    out = tmp_path / "out"
    assert main(["analyze", str(run_dir), "--out", str(out), "--tasks", "2", "--no-snapshots"]) == 0
    assert (out / analysis.ANALYSIS_FILE).is_file() and (out / analysis.MARKDOWN_FILE).is_file()
    assert not any((out / name).exists() for name in analysis.FIGURES.values())
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: no figures")]
    assert len(notes) == 1 and 'pip install "metarl[plots]"' in notes[0]
