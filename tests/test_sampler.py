"""The multi-task sampler: shapes, masking after termination, per-task policies, and failures that surface."""

import mujoco
import numpy as np
import pytest
import torch
from metarl.envs import Nav2DTask

from metarl.sampling.sampler import Episodes, Sampler


def test_episodes_are_time_major_per_task_and_masked_after_termination():
    sampler = Sampler("nav2d", num_tasks=2, episodes_per_task=3, horizon=30)
    tasks = [Nav2DTask((0.05, 0.0)), Nav2DTask((-0.3, 0.3))]
    # Move straight at the goal of each task: task 0 is reached on step 1, task 1 (0.3 per axis) on step 3.
    goals = torch.tensor([[0.05, 0.0], [-0.3, 0.3]])

    def act(obs):
        return (goals[:, None, :] - obs).clamp(-0.1, 0.1)

    episodes, timing = sampler.sample(act, tasks, seed=0)
    assert episodes.observations.shape == (2, 30, 3, 2)  # fixed horizon; steps after the end are padding
    assert episodes.mask[0].sum(0).tolist() == [1, 1, 1] and episodes.mask[1].sum(0).tolist() == [3, 3, 3]
    assert (episodes.rewards * (1 - episodes.mask)).abs().sum() == 0
    assert timing["env_steps"] == episodes.num_steps == 3 + 9
    torch.testing.assert_close(episodes.episode_returns()[0], torch.zeros(3))  # 0 distance after one move


def test_samplers_splitting_a_batch_give_its_episodes_and_leave_the_noise_stream_where_one_sampler_would():
    """Two samplers of one task each (two ranks) against one over both: task 0 ends after 1 step, task 1 after 3;
    the short one draws the noise of the 2 steps the other still ran, so both generators end where one would."""
    tasks = [Nav2DTask((0.05, 0.0)), Nav2DTask((-0.3, 0.3))]
    goals = torch.tensor([[0.05, 0.0], [-0.3, 0.3]])

    def actor(rows, generator):
        def act(obs):
            noise = 1e-3 * torch.randn(2, 3, 2, generator=generator)[rows]  # all tasks' noise, this one's rows
            return (goals[rows][:, None, :] - obs).clamp(-0.1, 0.1) + noise
        return act

    whole = torch.Generator().manual_seed(5)
    one, _ = Sampler("nav2d", 2, 3, horizon=30).sample(actor(slice(0, 2), whole), tasks, seed=0)
    gens = [torch.Generator().manual_seed(5) for _ in range(2)]
    second, _ = Sampler("nav2d", 1, 3, horizon=30).sample(actor(slice(1, 2), gens[1]), tasks[1:], seed=3,
                                                          steps_of_all=lambda steps: steps)
    longest = int(second.mask.sum(1).max())
    first, _ = Sampler("nav2d", 1, 3, horizon=30).sample(actor(slice(0, 1), gens[0]), tasks[:1], seed=0,
                                                         steps_of_all=lambda steps: max(steps, longest))
    def real(ep, name):  # the real steps' values (padding is masked out of every use)
        x = getattr(ep, name)
        return x * (ep.mask[..., None] if x.dim() == 4 else ep.mask)

    split = Episodes(*(torch.cat([getattr(first, n), getattr(second, n)]) for n in
                       ("observations", "actions", "rewards", "mask")))
    for name in ("observations", "actions", "rewards", "mask"):
        torch.testing.assert_close(real(split, name), real(one, name))
    for g in gens:
        assert torch.equal(g.get_state(), whole.get_state())


def test_actions_are_stored_as_sampled_and_clipped_for_the_env():
    sampler = Sampler("nav2d", num_tasks=1, episodes_per_task=2, horizon=5)
    big = torch.full((1, 2, 2), 5.0)
    episodes, _ = sampler.sample(lambda obs: big, [Nav2DTask((0.5, 0.5))], seed=0)
    assert torch.equal(episodes.actions[0, 0], big[0])  # what the policy sampled (for log-probabilities)
    torch.testing.assert_close(episodes.observations[0, 1], torch.full((2, 2), 0.1))  # the env saw it clipped


def test_a_failing_simulator_raises_a_clear_error():
    sampler = Sampler("cheetah-dir", num_tasks=2, episodes_per_task=2, horizon=5, num_threads=2)
    env = sampler.env

    class BrokenPool:  # stands in for mujoco.rollout.Rollout hitting a MuJoCo error in a worker
        def rollout(self, *args, **kwargs):
            raise mujoco.FatalError("boom in a worker")

        def close(self):
            pass

    env._rollout = BrokenPool()
    tasks = env.sample_tasks(np.random.default_rng(0), 2)
    with pytest.raises(RuntimeError, match="simulator failed.*boom in a worker"):
        sampler.sample(lambda obs: torch.zeros(2, 2, 6), tasks, seed=0)
    sampler.close()


def test_wrong_number_of_tasks_is_rejected():
    sampler = Sampler("nav2d", num_tasks=2, episodes_per_task=1, horizon=5)
    with pytest.raises(ValueError, match="built for 2 tasks, got 1"):
        sampler.sample(lambda obs: torch.zeros(2, 1, 2), [Nav2DTask((0.0, 0.0))], seed=0)
