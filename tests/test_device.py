"""The `device` setting on a CUDA GPU: the policy, the inner loop and the update there give the CPU's run (float64:
to round-off; float32: within the GPU's own rounding), a run trains, evaluates and resumes on the CPU. Skipped where
torch sees no GPU (CI); run on one with `python -m pytest tests/test_device.py -n 0`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl.config import Config
from metarl.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (device: cuda)")

NAV = dict(env="nav2d", meta_batch_size=6, episodes_per_task=5, horizon=30, eval_tasks=4, eval_episodes_per_task=4,
           eval_steps=2, hidden_sizes=[32, 32], sampler_threads=1, update_threads=1, seed=3)
COMPARED = ("returns/pre_adaptation", "returns/post_adaptation", "surrogate_before", "surrogate_after", "kl",
            "grad_norm")


def _run(device: str, iterations: int = 3, **kwargs) -> tuple[list[dict], dict, Trainer]:
    trainer = Trainer(Config(device=device, **{**NAV, **kwargs}))
    outer = trainer.cfg.outer
    steps = [{k.removeprefix(f"{outer}/"): v for k, v in trainer.step().items()} for _ in range(iterations)]
    return steps, trainer.evaluate(), trainer


def _mismatches(a: dict, b: dict, rel: float, tol: float) -> list:
    """Keys whose values differ by more than rel * their size + tol (the surrogate at the old parameters is a mean
    of normalised advantages: zero up to round-off, so it needs the absolute part)."""
    return [(k, a[k], b[k]) for k in a if k in b and abs(a[k] - b[k]) > rel * max(abs(a[k]), abs(b[k])) + tol]


@pytest.mark.parametrize("algo, outer, estimator", [("anil", "trpo", "reinforce"), ("maml", "trpo", "reinforce"),
                                                    ("maml", "trpo", "lvc"), ("anil", "promp", "lvc")])
def test_cuda_run_is_the_cpu_run_in_float64(algo, outer, estimator):
    """Same streams (noise drawn on the CPU, policy initialised there), so only round-off separates the devices."""
    kwargs = dict(algo=algo, outer=outer, estimator=estimator, dtype="float64")
    cpu_steps, cpu_eval, cpu = _run("cpu", **kwargs)
    gpu_steps, gpu_eval, gpu = _run("cuda", **kwargs)
    assert next(gpu.policy.parameters()).device.type == "cuda"
    for a, b in zip(cpu_steps, gpu_steps):
        assert not _mismatches({k: a[k] for k in COMPARED if k in a}, b, 1e-6, 1e-12)
    assert not _mismatches(cpu_eval, gpu_eval, 1e-6, 1e-12)
    # the parameters after 3 TRPO steps: conjugate gradient with damping 1e-5 amplifies round-off, so the bound is
    # on each tensor's relative distance, looser than the metrics'
    for (name, p), q in zip(cpu.policy.named_parameters(), gpu.policy.parameters()):
        distance = float((p - q.cpu()).norm() / p.norm())
        print(f"{algo}/{outer}/{estimator} {name}: relative distance {distance:.2e}")
        assert distance < 1e-6, (name, distance)


def test_cuda_float32_update_agrees_with_the_cpu_within_its_rounding():
    """float32 on the GPU (TF32 off by default in torch): the first iteration's TRPO numbers within 1e-3."""
    cpu_steps, _, _ = _run("cpu", iterations=1, algo="maml")
    gpu_steps, _, _ = _run("cuda", iterations=1, algo="maml")
    assert not _mismatches({k: cpu_steps[0][k] for k in COMPARED}, gpu_steps[0], 1e-3, 1e-6)


def test_bfloat16_fisher_products_on_cuda_stay_within_the_stated_error():
    """fvp_precision: bfloat16 under CUDA autocast: the Fisher-vector product within 3% of float32's (as on the CPU,
    tests/test_metalearner.py)."""
    from metarl.algorithm.metalearner import meta_gradient_and_fvp

    trainer = Trainer(Config(device="cuda", algo="maml", **{**NAV, "hidden_sizes": [64, 64]}))
    meta, _ = trainer.sample_meta_batch()
    params = {k: p.detach().requires_grad_(True) for k, p in trainer.policy.named_parameters()}
    lrs = [trainer.cfg.inner_lr]
    _, g, fvp32 = meta_gradient_and_fvp(trainer.policy, params, meta, trainer.keys, lrs, False)
    _, _, fvp16 = meta_gradient_and_fvp(trainer.policy, params, meta, trainer.keys, lrs, False,
                                        fvp_precision="bfloat16")
    exact, low = fvp32(g), fvp16(g)
    assert low.device.type == "cuda"
    assert float((low - exact).norm() / exact.norm()) < 0.03


def test_a_cuda_run_trains_evaluates_and_resumes_on_the_cpu(tmp_path):
    """The command line end to end: train on the GPU, evaluate, continue on the CPU from its checkpoint."""
    run = tmp_path / "run"
    sets = [f"{k}={json.dumps(v).replace(' ', '')}" for k, v in NAV.items()] + ["iterations=2", "eval_every=0"]
    train = [sys.executable, "-m", "metarl", "train", "--env", "nav2d", "--run-dir", str(run), "--set", *sets]
    done = subprocess.run([*train, "device=cuda"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2
    evaluated = subprocess.run([sys.executable, "-m", "metarl", "eval", str(run), "--steps", "1"],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "metarl", "train", "--resume", str(run), "--iterations", "3",
                              "--set", "device=cpu"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ckpt = torch.load(Path(run) / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 3
