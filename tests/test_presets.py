"""The protocol presets ship with the package, and a missing one is an error, never a silent fall-back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metarl import run

REPO = Path(__file__).resolve().parents[1]


def test_a_built_in_family_resolves_its_preset():
    cfg = run.resolve_config("cheetah-dir", None, {}, {})
    assert (cfg.frame_skip, cfg.fvp_subsample, cfg.meta_batch_size) == (1, 1.0, 40)  # the protocol, not Config()
    assert run.default_config_file("nav2d") == run.presets_dir() / "nav2d.yaml"


def test_a_preset_is_named_without_a_path():
    cfg = run.resolve_config(None, "quickstart", {}, {})
    assert (cfg.env, cfg.iterations, cfg.frame_skip) == ("cheetah-dir", 5, 1)


def test_a_missing_preset_is_an_error_naming_it(monkeypatch, tmp_path):
    (tmp_path / "nav2d.yaml").write_text("env: nav2d\n")
    monkeypatch.setattr(run, "presets_dir", lambda: tmp_path)
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
    probe = ("import json, metarl, metarl.run as r; c = r.resolve_config('cheetah-dir', None, {}, {}); "
             "print(json.dumps([metarl.__file__, str(r.default_config_file('cheetah-dir')), c.frame_skip]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(target)})
    assert done.returncode == 0, done.stderr[-2000:]
    module, preset, frame_skip = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(module).is_relative_to(target) and Path(preset).is_relative_to(target)
    assert frame_skip == 1
