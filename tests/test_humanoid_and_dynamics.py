"""humanoid-dir (ProMP's forward/backward humanoid) and the dynamics families (hopper-params, walker-params): formulas
from raw simulator state, tasks that edit exactly the parameters they name, and the batched forms against single
envs step for step."""

from __future__ import annotations

import gymnasium
import metarl.envs as envs
import numpy as np
import pytest
from metarl.envs import DynamicsBatch, DynamicsTask, HumanoidBatch, HumanoidDirTask
from metarl.envs.contract import check_family
from metarl.envs.dynamics import BASES

DYNAMICS = ["hopper-params", "walker-params"]
GYMNASIUM_ID = {"hopper-params": "Hopper-v5", "walker-params": "Walker2d-v5"}


def _mass_x(model, data) -> float:
    return float(np.sum(model.body_mass[:, None] * data.xipos, axis=0)[0] / np.sum(model.body_mass))


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_humanoid_reward_is_prompts_formula_on_raw_simulator_state(direction):
    env = envs.make("humanoid-dir")
    env.reset(seed=1, options={"task": HumanoidDirTask(direction)})
    u = env.unwrapped
    rng = np.random.default_rng(0)
    for _ in range(60):
        x_before = _mass_x(u.model, u.data)
        action = rng.uniform(-1.5, 1.5, 17)
        obs, reward, terminated, _, info = env.step(action)
        d = u.data
        # ProMP: 0.25 d (x' - x) / timestep - 0.1 sum(ctrl^2) - min(5e-7 sum(cfrc_ext^2), 10) + 5 (while healthy)
        forward = 0.25 * direction * (_mass_x(u.model, d) - x_before) / u.model.opt.timestep
        ctrl = 0.1 * np.sum(d.ctrl ** 2)
        np.testing.assert_allclose(d.ctrl, 0.4 * np.clip(action, -1.0, 1.0), rtol=1e-7)  # ProMP's normalize
        contact = min(5e-7 * np.sum(d.cfrc_ext ** 2), 10.0)
        alive = 5.0 if 1.0 < d.qpos[2] < 2.0 else 0.0
        assert reward == pytest.approx(forward - ctrl - contact + alive, rel=1e-9, abs=1e-9)
        assert info["reward_forward"] == pytest.approx(forward, rel=1e-9, abs=1e-12)
        assert terminated == (not 1.0 < d.qpos[2] < 2.0)
        if terminated:
            break
    assert terminated  # random actions topple it within 60 steps (0.9 s): the termination was exercised


def test_humanoid_family_passes_the_contract_checker_and_draws_directions_evenly():
    check_family(envs.get_family("humanoid-dir").env_cls, "humanoid-dir")
    d = [t.direction for t in envs.make("humanoid-dir").unwrapped.sample_tasks(np.random.default_rng(0), 2000)]
    assert set(d) == {-1.0, 1.0} and abs(np.mean(d)) < 0.1


def test_batched_humanoid_matches_single_envs_through_terminations():
    """rollout runs all but the last simulator step, starting its solver cold where a single env warm-starts; the
    humanoid's PGS solver stops at 50 iterations, so once the feet touch the floor the two differ by the solver's
    unfinished work (measured: observations within 4e-4 of their size, rewards within 6e-6, over 40 steps) where
    a converged solver gives round-off. Before contact they agree to round-off."""
    n = 4
    tasks = [HumanoidDirTask(1.0), HumanoidDirTask(-1.0)] * 2
    batch = envs.make_batched("humanoid-dir", n, num_threads=2)
    assert isinstance(batch, HumanoidBatch)
    batch.set_attr("task", tasks)
    obs, _ = batch.reset(seed=5)
    singles = [envs.make("humanoid-dir") for _ in range(n)]
    np.testing.assert_array_equal(obs, np.stack([e.reset(seed=5 + i, options={"task": tasks[i]})[0]
                                                 for i, e in enumerate(singles)]))
    rng = np.random.default_rng(2)
    ended = [None] * n
    for t in range(40):
        actions = rng.uniform(-1.2, 1.2, (n, 17)).astype(np.float32)
        obs, rewards, terminated, truncated, info = batch.step(actions)
        for i, env in enumerate(singles):
            if ended[i] is not None:
                assert rewards[i] == 0.0 and terminated[i]
                continue
            o, r, te, _, si = env.step(actions[i])
            np.testing.assert_allclose(obs[i], o, rtol=2e-3, atol=2e-3)
            assert rewards[i] == pytest.approx(r, abs=1e-4)
            if t < 8:  # before the feet touch the floor
                np.testing.assert_allclose(obs[i], o, rtol=0, atol=1e-7)
            assert terminated[i] == te
            if te:
                ended[i] = t
    assert all(e is not None for e in ended) and len(set(ended)) > 1, ended


@pytest.mark.parametrize("name", DYNAMICS)
def test_a_dynamics_task_scales_exactly_the_parameters_it_names(name):
    env = envs.make(name)
    u = env.unwrapped
    untouched = {k: getattr(u.model, k).copy() for k in ("geom_size", "dof_armature", "actuator_gear", "jnt_range")}
    first, second = u.sample_tasks(np.random.default_rng(3), 2)
    defaults = {k: getattr(u._defaults, k).copy() for k in BASES}
    for task in (first, second):  # the second replaces the first, never compounds on it
        env.reset(seed=0, options={"task": task})
        for key, base in BASES.items():
            expected = defaults[key] * base ** np.reshape(getattr(task, key), defaults[key].shape)
            np.testing.assert_allclose(getattr(u.model, key), expected, rtol=1e-12, err_msg=key)
        for key, value in untouched.items():
            np.testing.assert_array_equal(getattr(u.model, key), value, err_msg=key)
    exponents = np.concatenate([np.concatenate([getattr(t, k) for k in BASES])
                                for t in u.sample_tasks(np.random.default_rng(0), 500)])
    assert exponents.min() >= -3 and exponents.max() <= 3 and abs(exponents.mean()) < 0.1


@pytest.mark.parametrize("name", DYNAMICS)
def test_the_default_dynamics_are_gymnasiums_env_and_other_draws_change_the_motion(name):
    ours, theirs = envs.make(name), gymnasium.make(GYMNASIUM_ID[name])
    task = DynamicsTask.default(ours.unwrapped.model)
    np.testing.assert_array_equal(ours.reset(seed=4, options={"task": task})[0], theirs.reset(seed=4)[0])
    actions = np.random.default_rng(1).uniform(-1, 1, (8, ours.action_space.shape[0]))
    for a in actions:  # gymnasium's reward, observation and termination, step for step
        o, r, te, _, _ = ours.step(a)
        go, gr, gte, _, _ = theirs.step(a)
        np.testing.assert_array_equal(o, go)
        assert (r, te) == (gr, gte)
    drawn = ours.unwrapped.sample_tasks(np.random.default_rng(7), 1)[0]
    start = ours.reset(seed=4, options={"task": drawn})[0]
    moved = [ours.step(a)[0] for a in actions[:3]]
    assert not np.allclose(moved[-1], go) and np.isfinite(start).all()


@pytest.mark.parametrize("name", DYNAMICS)
def test_a_dynamics_family_passes_the_contract_and_refuses_bad_tasks(name):
    check_family(envs.get_family(name).env_cls, name)
    env = envs.make(name)
    task = env.unwrapped.sample_tasks(np.random.default_rng(0), 1)[0]
    too_far = DynamicsTask(**{**task.__dict__, "dof_damping": (3.5,) + task.dof_damping[1:]})
    too_short = DynamicsTask(**{**task.__dict__, "body_mass": task.body_mass[:-1]})
    for bad in (too_far, too_short):
        with pytest.raises(ValueError, match=f"{name}: .* out of range; allowed: a tuple of"):
            env.reset(options={"task": bad})


@pytest.mark.parametrize("name", DYNAMICS)
def test_batched_dynamics_family_holds_one_model_per_task_and_matches_single_envs(name):
    env = envs.make(name)
    three = env.unwrapped.sample_tasks(np.random.default_rng(1), 3)
    tasks = [three[0], three[1], three[2], three[1], three[0], three[2]]
    n = len(tasks)
    batch = envs.make_batched(name, n, num_threads=2)
    assert isinstance(batch, DynamicsBatch)
    batch.set_attr("task", tasks)
    models = batch._models
    assert models[0] is models[4] and models[1] is models[3] and models[2] is models[5]
    assert len({id(m) for m in models}) == 3
    obs, _ = batch.reset(seed=2)
    singles = [envs.make(name) for _ in range(n)]
    np.testing.assert_array_equal(obs, np.stack([e.reset(seed=2 + i, options={"task": tasks[i]})[0]
                                                 for i, e in enumerate(singles)]))
    for i, e in enumerate(singles):  # each copy's model carries its task's parameters
        for key in BASES:
            np.testing.assert_array_equal(getattr(models[i], key), getattr(e.unwrapped.model, key))
    rng = np.random.default_rng(3)
    ended = [None] * n
    for t in range(60):
        actions = rng.uniform(-1, 1, (n, batch.single_action_space.shape[0])).astype(np.float32)
        obs, rewards, terminated, truncated, info = batch.step(actions)
        for i, e in enumerate(singles):
            if ended[i] is not None:
                assert rewards[i] == 0.0 and terminated[i]
                continue
            o, r, te, tr, _ = e.step(actions[i])
            np.testing.assert_allclose(obs[i], o, rtol=0, atol=1e-5)
            assert rewards[i] == pytest.approx(r, abs=1e-5)
            assert (terminated[i], truncated[i]) == (te, tr)
            if te:
                ended[i] = t
    assert sum(e is not None for e in ended) >= 2 and len({e for e in ended if e is not None}) >= 2, ended
