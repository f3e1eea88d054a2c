"""Tests of the batched task families (metarl.envs.HalfCheetahBatch, Navigation2DBatch) against the single envs."""

from __future__ import annotations

import numpy as np
import pytest

import metarl.envs as envs
from metarl.envs import CheetahDirTask, CheetahVelTask, HalfCheetahBatch, Nav2DTask, Navigation2DBatch

COPIES = 6
SEED = 11
# Three different tasks, each twice (cheetah-dir has only two), in an order that no reversal or shift preserves.
MIXED_TASKS = {"cheetah-dir": [CheetahDirTask(1.0), CheetahDirTask(1.0), CheetahDirTask(-1.0)] * 2,
               "cheetah-vel": [CheetahVelTask(0.25), CheetahVelTask(1.0), CheetahVelTask(2.0)] * 2,
               "nav2d": [Nav2DTask((0.2, -0.1)), Nav2DTask((-0.35, 0.3)), Nav2DTask((0.05, 0.45))] * 2}
BAD_TASK = {"cheetah-dir": CheetahDirTask(0.0), "cheetah-vel": CheetahVelTask(3.0), "nav2d": Nav2DTask((0.0, 0.9))}
EXACT = dict(rtol=1e-12, atol=1e-12)


def _batched_and_singles(name, num_threads=1):
    """The batched form and COPIES single envs, set to the same mixed tasks and seeds (copy i: SEED + i)."""
    tasks = MIXED_TASKS[name]
    batch = envs.make_batched(name, COPIES, num_threads=num_threads)
    batch.set_attr("task", tasks)
    batch_obs, _ = batch.reset(seed=SEED)
    singles = [envs.make(name) for _ in range(COPIES)]
    single_obs = [env.reset(seed=SEED + i, options={"task": tasks[i]})[0] for i, env in enumerate(singles)]
    np.testing.assert_allclose(batch_obs, np.stack(single_obs), **EXACT)
    return batch, singles


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_batched_cheetah_equals_single_envs_step_for_step(name, num_threads):
    batch, singles = _batched_and_singles(name, num_threads)
    assert isinstance(batch, HalfCheetahBatch) and batch.num_threads == num_threads
    rng = np.random.default_rng(0)
    for t in range(200):
        # float32, as a policy gives (and as batch.action_space.sample() would)
        actions = rng.uniform(-1.0, 1.0, (COPIES, 6)).astype(np.float32)
        obs, rewards, terminated, truncated, info = batch.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
        single_obs = np.stack([r[0] for r in results])
        # The same mj_step on the same inputs: the physics is bit-identical, not merely close.
        np.testing.assert_array_equal(obs, single_obs)
        np.testing.assert_allclose(rewards, [r[1] for r in results], **EXACT)
        np.testing.assert_array_equal(terminated, [r[2] for r in results])
        np.testing.assert_array_equal(truncated, [r[3] for r in results])
        for key in ("reward_forward", "reward_ctrl", "x_velocity", "x_position"):
            np.testing.assert_allclose(info[key], [r[4][key] for r in results], **EXACT, err_msg=key)
    assert truncated.all() and not terminated.any()  # the time limit is reached at step 200, together


def test_nav2d_batched_equals_single_envs_until_each_copy_terminates():
    batch, singles = _batched_and_singles("nav2d")
    assert isinstance(batch, Navigation2DBatch)
    goals = np.array([task.goal for task in MIXED_TASKS["nav2d"]])
    rng = np.random.default_rng(0)
    # Copies 0-2 steer to their goals at different speeds (so terminate at different steps); copies 3-5 wander.
    gain = np.array([1.0, 0.5, 0.3, 0.0, 0.0, 0.0])[:, None]
    obs = np.zeros((COPIES, 2))
    done_at = [None] * COPIES
    for t in range(1, 101):
        wander = rng.uniform(-0.1, 0.1, (COPIES, 2))
        actions = np.where(gain > 0, gain * (goals - obs) + rng.normal(0.0, 1e-3, (COPIES, 2)), wander)
        prev_obs = obs
        obs, rewards, terminated, truncated, info = batch.step(actions)
        for i, env in enumerate(singles):
            if done_at[i] is not None:  # frozen after its termination: same place, reward 0, still terminated
                np.testing.assert_array_equal(obs[i], prev_obs[i])
                assert rewards[i] == 0.0 and info["reward_dist"][i] == 0.0 and terminated[i] and not truncated[i]
                continue
            single_obs, reward, single_terminated, single_truncated, single_info = env.step(actions[i])
            np.testing.assert_allclose(obs[i], single_obs, **EXACT)
            np.testing.assert_allclose(rewards[i], reward, **EXACT)
            np.testing.assert_allclose(info["reward_dist"][i], single_info["reward_dist"], **EXACT)
            assert (terminated[i], truncated[i]) == (single_terminated, single_truncated)
            if single_terminated:
                done_at[i] = t
    steered = done_at[:3]
    assert all(steered) and len(set(steered)) == 3, steered  # three terminations, at three different steps
    assert done_at[3:] == [None] * 3 and truncated[3:].all()  # the wanderers run to the time limit


@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel", "nav2d"])
def test_batched_get_attr_returns_the_tasks_and_set_attr_checks_them(name):
    batch = envs.make_batched(name, COPIES)
    tasks = MIXED_TASKS[name]
    batch.set_attr("task", tasks)
    assert list(batch.get_attr("task")) == tasks
    with pytest.raises(ValueError, match=f"{COPIES - 1} tasks"):
        batch.set_attr("task", tasks[:-1])
    with pytest.raises(ValueError, match=name):
        batch.set_attr("task", tasks[:-1] + [BAD_TASK[name]])
    assert list(batch.get_attr("task")) == tasks  # a rejected list changes nothing


def test_batched_cheetah_reset_seed_reproduces_and_distinguishes_copies():
    batch = envs.make_batched("cheetah-vel", 3)
    first, _ = batch.reset(seed=5)
    again, _ = batch.reset(seed=5)
    other, _ = batch.reset(seed=6)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[1], other[0])  # copy i is seeded with seed + i
    assert not np.array_equal(first[0], first[1])
