"""Tests of the batched task families (metarl.envs.HalfCheetahBatch, Navigation2DBatch) against the single envs."""

from __future__ import annotations

import mujoco
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


# mujoco.rollout zeroes the solver's warm start each env step where a single env carries it over: the first step
# is bit-identical, later ones differ at round-off level (measured: 1e-14 after 2 steps, 2e-12 after 10), which the
# chaotic dynamics then amplify as they do any round-off (a 1e-12 change of the initial state gives 7e-7 by step 10).
ROUND_OFF = dict(rtol=0, atol=1e-9)


@pytest.mark.parametrize("bound", [1.0, 3.0], ids=["in-range", "out-of-range"])
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_batched_cheetah_equals_single_envs_up_to_round_off(name, num_threads, bound):
    batch, singles = _batched_and_singles(name, num_threads)
    assert isinstance(batch, HalfCheetahBatch) and batch.num_threads == num_threads
    rng = np.random.default_rng(0)
    for t in range(10):
        # float32, as a policy gives (and as batch.action_space.sample() would); bound 3: mostly outside [-1, 1]
        actions = rng.uniform(-bound, bound, (COPIES, 6)).astype(np.float32)
        obs, rewards, terminated, truncated, info = batch.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
        single_obs = np.stack([r[0] for r in results])
        if t == 0:  # same state, same controls, same (zero) warm start: the same mj_step, bit for bit
            np.testing.assert_array_equal(obs, single_obs)
        np.testing.assert_allclose(obs, single_obs, **ROUND_OFF)
        np.testing.assert_allclose(rewards, [r[1] for r in results], **ROUND_OFF)
        np.testing.assert_array_equal(terminated, [r[2] for r in results])
        np.testing.assert_array_equal(truncated, [r[3] for r in results])
        for key in ("reward_forward", "reward_ctrl", "x_velocity", "x_position"):
            np.testing.assert_allclose(info[key], [r[4][key] for r in results], **ROUND_OFF, err_msg=key)
        # The reward is its formula on the batch's own states.
        np.testing.assert_allclose(info["x_velocity"], (batch.qpos[:, 0] - (info["x_position"] - info["x_velocity"]
                                                                             * batch.dt)) / batch.dt, atol=1e-9)
        np.testing.assert_allclose(rewards, info["reward_forward"] + info["reward_ctrl"], rtol=1e-12)
        clipped = np.clip(actions.astype(np.float64), -1.0, 1.0)  # the cost charges the clipped action
        np.testing.assert_allclose(info["reward_ctrl"], -0.05 * np.square(clipped).sum(1), rtol=1e-12)


@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_batched_cheetah_with_com_velocity_equals_single_envs_up_to_round_off(name):
    tasks = MIXED_TASKS[name]
    batch = envs.make_batched(name, COPIES, num_threads=2, frame_skip=1, forward_velocity="com")
    batch.set_attr("task", tasks)
    batch.reset(seed=SEED)
    singles = [envs.make(name, frame_skip=1, forward_velocity="com") for _ in range(COPIES)]
    for i, env in enumerate(singles):
        env.reset(seed=SEED + i, options={"task": tasks[i]})
    rng = np.random.default_rng(3)
    for _ in range(8):
        actions = rng.uniform(-1, 1, (COPIES, 6)).astype(np.float32)
        _, rewards, _, _, info = batch.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
        np.testing.assert_allclose(rewards, [r[1] for r in results], **ROUND_OFF)
        np.testing.assert_allclose(info["reward_forward"], [r[4]["reward_forward"] for r in results], **ROUND_OFF)


@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_batched_cheetah_charges_the_control_cost_on_the_action_clipped_to_the_action_space(name):
    # Copies 0-2 step at 3x the bound (or a mix of in- and out-of-range), copies 3-5 at its clipped value.
    batch = envs.make_batched(name, COPIES)
    assert np.all(batch.single_action_space.low == -1.0) and np.all(batch.single_action_space.high == 1.0)
    batch.set_attr("task", MIXED_TASKS[name][:3] * 2)
    batch.reset(seed=[SEED, SEED + 1, SEED + 2] * 2)
    mixed = np.array([3.0, -3.0, 0.5, -0.25, 7.0, -1.0])
    outside = np.stack([np.full(6, 3.0), np.full(6, -3.0), mixed])
    actions = np.concatenate([outside, np.clip(outside, -1.0, 1.0)]).astype(np.float32)
    for _ in range(3):
        obs, rewards, _, _, info = batch.step(actions)
        np.testing.assert_array_equal(obs[:3], obs[3:])
        np.testing.assert_array_equal(rewards[:3], rewards[3:])
        np.testing.assert_array_equal(info["reward_ctrl"][:3], info["reward_ctrl"][3:])
        np.testing.assert_allclose(info["reward_ctrl"][:2], -0.05 * 6, rtol=1e-12)


@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_batched_cheetah_is_bit_identical_for_any_thread_count_over_an_episode(name):
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1.0, 1.0, (200, 7, 6)).astype(np.float32)
    runs = []
    for threads in (1, 2, 3):
        batch = envs.make_batched(name, 7, num_threads=threads)
        batch.set_attr("task", (MIXED_TASKS[name] * 2)[:7])
        steps = [batch.reset(seed=SEED)[0]]
        for t in range(200):
            obs, rewards, terminated, truncated, _ = batch.step(actions[t])
            steps += [obs, rewards]
            assert truncated.all() == (t == 199) and not terminated.any()  # the time limit, for all copies at once
        batch.close()
        runs.append(steps)
    for other in runs[1:]:  # chaotic dynamics would turn any scheduling-dependent difference into a large one
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_batched_cheetah_steps_a_diverging_copy_as_the_single_env_does():
    """MuJoCo resets a copy whose state blows up and warns; rollout then stops that copy, the batch finishes it."""
    batch = envs.make_batched("cheetah-dir", 3, num_threads=2)
    batch.reset(seed=0)
    batch.qvel[1] = 1e12
    single = envs.make("cheetah-dir")
    single.reset(seed=0)
    single.unwrapped.set_state(batch.qpos[1].copy(), batch.qvel[1].copy())
    actions = np.full((3, 6), 0.5, dtype=np.float32)
    warnings = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(warnings.append)  # collect MuJoCo's warnings (else they go to MUJOCO_LOG.TXT)
    try:
        obs, rewards, *_ = batch.step(actions)
        single_obs, single_reward, *_ = single.step(actions[1])
    finally:
        mujoco.set_mju_user_warning(previous)
    assert warnings and all("unstable" in w for w in warnings)
    np.testing.assert_array_equal(obs[1], single_obs)
    assert rewards[1] == single_reward
    np.testing.assert_allclose(batch._state[:, 0], 5 * batch.model.opt.timestep)  # every copy advanced one step


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
