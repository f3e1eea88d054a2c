"""Tests of the device physics backend (`physics: mjx`, metarl/envs/mjx.py) on JAX's CPU backend, against the C
simulator: the same actions give the same states and rewards within float32 round-off, and a short training run on
it gives the C backend's numbers."""

from __future__ import annotations

import os

# Compile the tests' physics with XLA's optimisations off: half the compile time for slower steps, which these few
# hundred steps do not feel (before JAX starts its backend; only this file uses JAX)
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("jax")
mjx_module = pytest.importorskip("metarl.envs.mjx")

import metarl.envs as envs  # noqa: E402
from metarl.config import ConfigError, load_config  # noqa: E402
from metarl.envs import CheetahDirTask, CheetahVelTask, Nav2DTask  # noqa: E402
from metarl.runs import preset_path  # noqa: E402
from metarl.sampling.sampler import Sampler  # noqa: E402
from metarl.trainer import Trainer  # noqa: E402

# every test of this file in one worker (pytest-xdist's loadgroup): the physics compiles once
pytestmark = pytest.mark.xdist_group("mjx")
# One batch size and frame skip for every MJX test of this file: the physics is compiled once for them (per process,
# and JAX's persistent cache keeps it across runs).
COPIES, FRAME_SKIP, SEED = 8, 1, 5
TASKS = {"cheetah-dir": [CheetahDirTask(1.0), CheetahDirTask(-1.0)] * 4,
         "cheetah-vel": [CheetahVelTask(v) for v in (0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.0)],
         "nav2d": [Nav2DTask((0.2, -0.1)), Nav2DTask((-0.05, 0.02)), Nav2DTask((0.05, 0.45)),
                   Nav2DTask((0.0, 0.0))] * 2}
# float32 against float64: measured over these 20 steps, observations agree to about 2e-4 and rewards to 1e-5
CHEETAH_TOL = dict(rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_mjx_cheetah_steps_as_the_c_simulator(name):
    device = mjx_module.make_device_batched(name, COPIES, frame_skip=FRAME_SKIP)
    c_sim = envs.make_batched(name, COPIES, frame_skip=FRAME_SKIP)
    for env in (device, c_sim):
        env.set_attr("task", TASKS[name])
    obs_d, _ = device.reset(seed=SEED)
    obs_c, _ = c_sim.reset(seed=SEED)
    assert isinstance(obs_d, torch.Tensor) and obs_d.device == device.device
    np.testing.assert_allclose(obs_d.cpu().numpy(), obs_c, rtol=0, atol=1e-6)  # the same draws, in float32
    rng = np.random.default_rng(0)
    for t in range(20):
        actions = rng.uniform(-1.5, 1.5, (COPIES, 6)).astype(np.float32)  # some outside [-1, 1]: clipped alike
        obs_d, rew_d, term_d, trunc_d, _ = device.step(torch.as_tensor(actions))
        obs_c, rew_c, term_c, trunc_c, _ = c_sim.step(actions)
        np.testing.assert_allclose(obs_d.cpu().numpy(), obs_c, **CHEETAH_TOL, err_msg=f"step {t}")
        np.testing.assert_allclose(device.qpos, c_sim.qpos, **CHEETAH_TOL, err_msg=f"step {t}")
        np.testing.assert_allclose(device.qvel, c_sim.qvel, **CHEETAH_TOL, err_msg=f"step {t}")
        np.testing.assert_allclose(rew_d.cpu().numpy(), rew_c, rtol=0, atol=1e-3, err_msg=f"step {t}")
        np.testing.assert_array_equal(term_d.cpu().numpy(), term_c)
        np.testing.assert_array_equal(trunc_d.cpu().numpy(), trunc_c)


def test_nav2d_on_the_device_steps_as_the_numpy_batch_through_terminations():
    device = mjx_module.make_device_batched("nav2d", COPIES, max_episode_steps=12, device="cpu")
    c_sim = envs.make_batched("nav2d", COPIES, max_episode_steps=12)
    for env in (device, c_sim):
        env.set_attr("task", TASKS["nav2d"])
        env.reset(seed=SEED)
    rng = np.random.default_rng(1)
    ended = np.zeros(COPIES, bool)
    for t in range(12):
        actions = rng.uniform(-0.15, 0.15, (COPIES, 2)).astype(np.float32)
        actions[3] = 0.0  # the copy whose goal is the origin stays there: it terminates at once
        out_d = device.step(torch.as_tensor(actions))
        out_c = c_sim.step(actions)
        for got, want in zip(out_d[:4], out_c[:4]):
            np.testing.assert_allclose(got.cpu().numpy(), want, rtol=0, atol=1e-6, err_msg=f"step {t}")
        ended |= out_c[2]
    assert ended[3] and not ended.all()


def test_a_sampler_on_mjx_keeps_the_episodes_on_the_batchs_device_and_matches_the_c_simulator():
    tasks = TASKS["cheetah-dir"][:4]
    samplers = {physics: Sampler("cheetah-dir", 4, 2, horizon=15, env_kwargs={"frame_skip": FRAME_SKIP},
                                 physics=physics) for physics in ("mujoco", "mjx")}
    out = {}
    for physics, sampler in samplers.items():
        gen = torch.Generator().manual_seed(0)
        out[physics], _ = sampler.sample(lambda obs: 0.5 * torch.randn(*obs.shape[:2], 6, generator=gen).to(obs.device),
                                         tasks, seed=SEED)
    assert out["mjx"].observations.device == samplers["mjx"].env.device
    assert out["mjx"].observations.shape == out["mujoco"].observations.shape == (4, 15, 2, 17)
    np.testing.assert_allclose(out["mjx"].rewards.cpu(), out["mujoco"].rewards, rtol=0, atol=1e-3)
    np.testing.assert_allclose(out["mjx"].observations.cpu(), out["mujoco"].observations, rtol=0, atol=2e-3)
    assert out["mjx"].num_steps == out["mujoco"].num_steps == 4 * 15 * 2


def _train(name: str, physics: str, iterations: int, **sizes) -> list[dict]:
    cfg = load_config(preset_path(name), {"physics": physics, "seed": 3, "sampler_threads": 1, "update_threads": 1,
                                          **sizes})
    trainer = Trainer(cfg)
    return [trainer.step() for _ in range(iterations)]


def test_nav2d_trains_on_the_device_backend_as_on_the_c_one():
    sizes = {"meta_batch_size": 10, "episodes_per_task": 10}
    device, c_sim = _train("nav2d", "mjx", 6, **sizes), _train("nav2d", "mujoco", 1, **sizes)
    key = "returns/post_adaptation"
    # the same policy, noise and tasks: the first iteration agrees to float32 round-off; then the run learns
    # (tests/test_trainer.py holds the C backend's runs to the same kind of gain)
    assert device[0][key] == pytest.approx(c_sim[0][key], abs=1e-3)
    assert np.mean([m[key] for m in device[-2:]]) > device[0][key] + 25


def test_a_short_cheetah_dir_run_on_mjx_gives_the_c_backends_numbers():
    # 4 tasks x 2 episodes = COPIES: the physics compiled for the tests above
    sizes = {"meta_batch_size": 4, "episodes_per_task": 2, "horizon": 20, "hidden_sizes": [16],
             "frame_skip": FRAME_SKIP}
    # the papers' TRPO: ProMP's first Adam steps move each parameter by about its step size in the direction of its
    # gradient's sign, which float32 round-off can flip where a gradient is near zero
    device, c_sim = _train("cheetah-dir-paper", "mjx", 3, **sizes), _train("cheetah-dir-paper", "mujoco", 3, **sizes)
    for a, b in zip(device, c_sim):
        for key in ("returns/pre_adaptation", "returns/post_adaptation"):
            assert a[key] == pytest.approx(b[key], abs=0.1), (a["iteration"], key)


def test_mjx_refuses_what_it_cannot_run_in_one_line_before_a_run_writes_anything(tmp_path, monkeypatch, capsys):
    from metarl.cli import main as metarl_main

    with pytest.raises(ValueError, match="physics: mjx does not run task family 'ant-vel'.*cheetah-dir"):
        mjx_module.make_device_batched("ant-vel", 2)
    for sets, message in ((["physics=mjx"], "does not run task family 'ant-vel'"),
                          (["physics=mjx", "forward_velocity=com"], "displacement velocity only")):
        env = "ant-vel" if "ant-vel" in message else "cheetah-dir"
        assert metarl_main(["train", "--env", env, "--run-dir", str(tmp_path / "run"), "--set", *sets]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
        assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="forward_velocity='com'"):
        mjx_module.make_device_batched("cheetah-dir", 2, forward_velocity="com")
    with pytest.raises(ConfigError, match="physics"):
        load_config(preset_path("nav2d"), {"physics": "bullet"})
    if mjx_module.importlib.util.find_spec("warp") is None:
        with pytest.raises(ImportError, match="pip install warp-lang"):
            mjx_module.make_device_batched("cheetah-dir", 2, impl="warp")
    # without the extra: the pip install that fixes it
    monkeypatch.setitem(__import__("sys").modules, "jax", None)
    assert "pip install -e \".[gpu]\"" in mjx_module.problem("cheetah-dir")


def test_the_gpu_benchmark_times_both_physics_and_writes_its_table(capsys):
    """benchmarks/gpu_physics.py's pieces on JAX's CPU backend at its quick sizes (the physics compiled above): a
    row's child run, and the table its rows make (the GPU figures come from a machine with one)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_physics.py"
    spec = importlib.util.spec_from_file_location("gpu_physics", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = []
    for physics in ("mujoco", "mjx"):
        bench.child("anil", physics, "cpu", 1, quick=True)
        rows.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1][len("RESULT "):]))
    assert all(r["iteration_s"] > 0 and r["sampling_s"] > 0 for r in rows)
    result = {"runs": rows, "iterations": 1, "protocol": "tiny", "command": "python benchmarks/gpu_physics.py",
              "date": "now", "throughput": {"worlds": 8, "metarl_steps_per_s": 100.0, "bare_mjx_steps_per_s": 120.0,
                                            "bare_over_metarl": 1.2, "jax_backend": "cpu"},
              "machine": {"cpu_count": 2, "torch": "t", "jax": "j", "python": "p"}}
    table = bench.markdown(result)
    assert "| ANIL | mujoco |" in table and "| ANIL | mjx |" in table and "(1.20x)" in table


def test_on_a_gpu_the_episodes_and_the_policy_never_leave_it():
    """Where JAX has a CUDA backend (a lent GPU machine): the cheetah batch's tensors, the sampled episodes and a
    training iteration's batch live on the GPU."""
    import jax

    if jax.default_backend() != "gpu" or not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU seen by JAX and torch")
    sampler = Sampler("cheetah-dir", 2, 2, horizon=5, env_kwargs={"frame_skip": FRAME_SKIP}, physics="mjx")
    assert sampler.device.type == "cuda"
    episodes, _ = sampler.sample(lambda obs: torch.zeros(*obs.shape[:2], 6, device=obs.device),
                                 TASKS["cheetah-dir"][:2], seed=SEED)
    assert all(x.device.type == "cuda" for x in (episodes.observations, episodes.rewards, episodes.mask))
    metrics = _train("cheetah-dir", "mjx", 1, meta_batch_size=2, episodes_per_task=2, horizon=5, device="cuda",
                     task_chunk=2, frame_skip=FRAME_SKIP)[0]
    assert np.isfinite(metrics["returns/post_adaptation"])
