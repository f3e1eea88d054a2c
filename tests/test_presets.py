"""The protocol presets ship with the package, and a missing one is an error, never a silent fall-back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metarl import runs as run
from metarl.runs import presets

REPO = Path(__file__).resolve().parents[1]


def test_a_built_in_family_resolves_its_preset():
    cfg = run.resolve_config("cheetah-dir", None, {}, {})
    assert (cfg.frame_skip, cfg.fvp_subsample, cfg.meta_batch_size) == (1, 1.0, 40)  # the protocol, not Config()
    assert run.default_config_file("nav2d") == run.presets_dir() / "nav2d.yaml"
    # cheetah-dir's default is metarl's best configuration for it; the papers' protocol is a preset of its own
    assert (cfg.outer, cfg.estimator) == ("promp", "lvc")
    paper = run.resolve_config(None, "cheetah-dir-paper", {}, {})
    assert (paper.env, paper.outer, paper.estimator) == ("cheetah-dir", "trpo", "reinforce")
    assert run.paper_config_file("cheetah-dir") == run.presets_dir() / "cheetah-dir-paper.yaml"
    assert run.paper_config_file("nav2d") is None  # nav2d's preset is the papers' protocol itself


def test_a_preset_is_named_without_a_path():
    cfg = run.resolve_config(None, "quickstart", {}, {})
    assert (cfg.env, cfg.iterations, cfg.frame_skip) == ("cheetah-dir", 5, 1)
    default = run.resolve_config("cheetah-dir", None, {}, {})  # the quick start shows the flagship's own loop
    assert all(getattr(cfg, key) == getattr(default, key) for key in ("outer", "estimator", "inner_optimizer",
                                                                         "promp_max_kl"))


def test_a_missing_preset_is_an_error_naming_it(monkeypatch, tmp_path):
    (tmp_path / "nav2d.yaml").write_text("env: nav2d\n")
    monkeypatch.setattr(presets, "presets_dir", lambda: tmp_path)  # where preset_path looks
    with pytest.raises(run.RunError, match=r"preset 'cheetah-dir' is not installed .*installed presets: nav2d"):
        run.resolve_config("cheetah-dir", None, {}, {})
    with pytest.raises(run.RunError, match="preset 'nope' is not installed"):
        run.resolve_config(None, "nope", {}, {})


def test_a_plain_install_ships_the_presets(tmp_path):
    """`pip install .` (not editable): the wheel holds configs/ as metarl.configs, and the installed package, imported
    from outside the checkout, resolves `--env cheetah-dir` to the protocol preset (frame skip 1)."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("metarl-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = ("import json, metarl, metarl.runs as r, metarl.algorithm.metalearner as m, metarl.common.files as f, "
             "metarl.sampling.sampler as s; c = r.resolve_config('cheetah-dir', None, {}, {}); "
             "print(json.dumps([metarl.__file__, str(r.default_config_file('cheetah-dir')), c.frame_skip, "
             "[m.__file__, f.__file__, s.__file__]]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(target)})
    assert done.returncode == 0, done.stderr[-2000:]
    module, preset, frame_skip, layers = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(module).is_relative_to(target) and Path(preset).is_relative_to(target)
    assert all(Path(path).is_relative_to(target) for path in layers)  # every sub-package is in the wheel
    assert frame_skip == 1


GRID_RUNS = REPO / "benchmarks" / "results" / "grid" / "runs"


@pytest.mark.parametrize("env", run.PRESET_FAMILIES)
def test_the_grids_default_rows_were_trained_with_what_the_default_command_resolves_to(env):
    """The README's headline and status are generated from the grid's default rows (ENV-ALGO-seedN): each was trained
    with every acting setting of `metarl train --env ENV --algo ALGO --seed N` as the installed preset resolves it
    today, so the headline cannot drift from what the command does (issue 52)."""
    from metarl.config import acting_settings, load_config
    from metarl.experiments.sweep import run_name

    rows = [GRID_RUNS / run_name(env, algo, seed) for algo in ("anil", "maml") for seed in (0, 1, 2)]
    # every algorithm has its default rows; a seed still training when the default changed comes when it is published
    # (the headline counts the seeds it has and says "so far" until all three finished)
    assert all((GRID_RUNS / run_name(env, algo, 0) / "config.yaml").is_file() for algo in ("anil", "maml"))
    rows = [row for row in rows if (row / "config.yaml").is_file()]
    for row in rows:
        trained = load_config(row / "config.yaml")
        default = run.resolve_config(env, None, {}, {"algo": trained.algo, "seed": trained.seed})
        assert acting_settings(trained) == acting_settings(default), row.name


def test_every_published_run_is_named_by_its_variant_and_the_papers_protocol_has_a_preset():
    """A run directory's name says what it is: the default, the papers' protocol ('paper') or a named variant, as
    `metarl sweep` would name it; the cheetah-dir-paper preset reproduces the grid's paper rows."""
    from metarl.config import acting_settings, load_config
    from metarl.experiments.sweep import run_name, variant

    runs = [p for p in sorted(GRID_RUNS.iterdir()) if (p / "config.yaml").is_file()]
    assert len(runs) >= 18
    for path in runs:
        cfg = load_config(path / "config.yaml")
        assert path.name == run_name(cfg.env, cfg.algo, cfg.seed, variant(cfg))
    paper = load_config(GRID_RUNS / "cheetah-dir-maml-paper-seed1" / "config.yaml")
    preset = run.resolve_config(None, "cheetah-dir-paper", {}, {"algo": "maml", "seed": 1})
    assert (paper.outer, paper.estimator) == ("trpo", "reinforce")
    # fvp_precision aside: the rows were trained in float32 before the preset's `auto` (bfloat16 products where the
    # hardware has them, validated in benchmarks/results/studies/fisher_precision.md; float32 elsewhere)
    assert {**acting_settings(paper), "fvp_precision": None} == {**acting_settings(preset), "fvp_precision": None}


@pytest.mark.parametrize("env", ["ant-vel", "ant-dir", "ant-goal", "humanoid-dir", "hopper-params", "walker-params"])
def test_train_with_env_takes_the_installed_preset_named_after_the_family(env):
    """`metarl train --env ant-vel` (and a sweep's cell) trains the family's own preset, not Config's defaults (the
    presets of the issue-54 families were installed but never picked up by --env)."""
    from metarl.config import load_config

    assert run.default_config_file(env) == run.presets_dir() / f"{env}.yaml"
    resolved = run.resolve_config(env, None, {}, {})
    preset = load_config(run.presets_dir() / f"{env}.yaml")
    assert (resolved.iterations, resolved.meta_batch_size, resolved.horizon) == \
        (preset.iterations, preset.meta_batch_size, preset.horizon)
    assert run.default_config_file("metarl/Navigation2D-v0") == run.presets_dir() / "nav2d.yaml"
