"""Hopper-Params and Walker-Params: tasks that change the physics, not the reward (the `rand_param_envs` that ProMP's
experiments use: Rothfuss et al., "ProMP", ICLR 2019, Fig. 2, HopperRandParams and WalkerRandParams).

A task is a draw of the model's dynamics: every body's mass and each of its three principal inertias, every geom's
three friction coefficients scaled by `1.5^u`, every joint's damping by `1.3^u`, each `u ~ U[-3, 3]` drawn
independently (rand_param_envs' `RandomEnv.sample_tasks`, log-scale limit 3). The reward, observation, reset and
termination are gymnasium's Hopper-v5 and Walker2d-v5 (the rand_param_envs use old gym's equivalents; v5 pays the
alive bonus only while healthy and its walker model has the corrected left-foot friction).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import mujoco
import numpy as np
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from metarl.envs.mujoco_batch import MujocoTaskBatch
from metarl.envs.tasks import TaskEnv, check_count

HORIZON = 200
LOG_SCALE_LIMIT = 3.0
# parameter: base of its scale factor (rand_param_envs: 1.5 for masses, inertias and frictions, 1.3 for damping)
BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}


@dataclass(frozen=True)
class DynamicsTask:
    """Log-scale exponents `u` of the randomised parameters, flattened in the model's order: each parameter is its
    default times `base^u` (BASES). Exponents in [-3, 3]."""

    body_mass: tuple[float, ...]
    body_inertia: tuple[float, ...]
    dof_damping: tuple[float, ...]
    geom_friction: tuple[float, ...]

    @classmethod
    def default(cls, model: mujoco.MjModel) -> DynamicsTask:
        """The task of the unchanged model (every exponent 0)."""
        return cls(**{name: (0.0,) * getattr(model, name).size for name in BASES})


def sample_dynamics(model: mujoco.MjModel, rng: np.random.Generator, n: int) -> list[DynamicsTask]:
    """`n` dynamics draws for `model`: per task, exponents U[-3, 3] for masses, inertias, damping, frictions, in that
    order (rand_param_envs' order)."""
    tasks = []
    for _ in range(check_count(n)):
        draws = {name: tuple(float(u) for u in rng.uniform(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT,
                                                             getattr(model, name).size)) for name in BASES}
        tasks.append(DynamicsTask(**draws))
    return tasks


def check_dynamics(task, family: str, model: mujoco.MjModel) -> DynamicsTask:
    """`task` if it is a DynamicsTask for `model` (one exponent per parameter entry, each in [-3, 3]), else a
    ValueError naming the family, the bad field and what is allowed."""
    if not isinstance(task, DynamicsTask):
        raise ValueError(f"{family}: expected a DynamicsTask, got {task!r} ({type(task).__name__})")
    for field in fields(DynamicsTask):
        value = getattr(task, field.name)
        size = getattr(model, field.name).size
        ok = isinstance(value, tuple) and len(value) == size and all(
            isinstance(u, (int, float)) and not isinstance(u, bool) and np.isfinite(u)
            and -LOG_SCALE_LIMIT <= u <= LOG_SCALE_LIMIT for u in value)
        if not ok:
            raise ValueError(f"{family}: {field.name} {value!r} is out of range; allowed: a tuple of {size} "
                             f"exponents in [-3, 3]")
    return task


def apply_dynamics(model: mujoco.MjModel, defaults: mujoco.MjModel, task: DynamicsTask) -> None:
    """Write `task`'s parameters into `model`: each randomised parameter of `defaults` times base^u."""
    for name, base in BASES.items():
        default = getattr(defaults, name)
        getattr(model, name)[:] = default * base ** np.reshape(getattr(task, name), default.shape)


class _DynamicsEnv(TaskEnv):
    """A gymnasium locomotion env whose task is its dynamics; subclasses name the gymnasium env and family."""

    horizon = HORIZON
    family_name = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._defaults = mujoco.MjModel.from_xml_path(self.fullpath)  # the unchanged parameters, to scale
        self._default_task = DynamicsTask.default(self.model)

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list[DynamicsTask]:
        return sample_dynamics(self._defaults, rng, n)

    def _check(self, task) -> DynamicsTask:
        return check_dynamics(task, self.family_name, self._defaults)

    @property
    def task(self) -> DynamicsTask:
        return self._task if self._task is not None else self._default_task

    @task.setter
    def task(self, task) -> None:
        self._task = self._check(task)
        apply_dynamics(self.model, self._defaults, self._task)


class HopperParamsEnv(_DynamicsEnv, HopperEnv):
    """Hopper-Params: hop forwards under randomised dynamics (rand_param_envs' HopperRandParams, as ProMP used).

    Tasks: `DynamicsTask`, masses, inertias and frictions scaled by 1.5^u, joint damping by 1.3^u, u ~ U[-3, 3].
    Reward: `v + 1 - 0.001 sum(a^2)`. Here `v` is the torso's x displacement over the env step / dt (0.008 s x 4),
    1 the alive bonus while healthy and `a` the action clipped to [-1, 1]^3; info holds reward_forward,
    reward_survive, reward_ctrl.
    Observation, physics, reset noise: gymnasium Hopper-v5. Episode end: height <= 0.7, |angle| >= 0.2 or a state
    entry beyond 100 in size; time limit 200.
    """

    family_name = "hopper-params"


class WalkerParamsEnv(_DynamicsEnv, Walker2dEnv):
    """Walker-Params: walk forwards under randomised dynamics (rand_param_envs' WalkerRandParams, as ProMP used).

    Tasks: `DynamicsTask`, masses, inertias and frictions scaled by 1.5^u, joint damping by 1.3^u, u ~ U[-3, 3].
    Reward: `v + 1 - 0.001 sum(a^2)`. Here `v` is the torso's x displacement over the env step / dt (0.008 s x 4),
    1 the alive bonus while healthy and `a` the action clipped to [-1, 1]^6; info holds reward_forward,
    reward_survive, reward_ctrl.
    Observation, physics, reset noise: gymnasium Walker2d-v5. Episode end: height outside (0.8, 2) or |angle| >= 1;
    time limit 200.
    """

    family_name = "walker-params"


class DynamicsBatch(MujocoTaskBatch):
    """Many copies of a dynamics family stepped by `mujoco.rollout`, one model per distinct task (the copies of a
    task share it), edited when the tasks are set. Same draws and formulas as the single envs (tested)."""

    edits_physics = True

    def __init__(self, family: type[_DynamicsEnv], num_envs: int, *, num_threads: int = 1,
                 max_episode_steps: int = HORIZON):
        single = family()  # gymnasium's model, constants and initial state, read once
        self.family = family
        self._single = single
        self.frame_skip = single.frame_skip
        self._noise = single._reset_noise_scale
        self._init_qpos, self._init_qvel = single.init_qpos.copy(), single.init_qvel.copy()
        self._defaults = single._defaults
        super().__init__(num_envs, copy.copy(self._defaults), num_threads=num_threads,
                         max_episode_steps=max_episode_steps)

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list:
        return self._single.sample_tasks(rng, n)

    def _check_task(self, task):
        return self._single._check(task)

    def _default_tasks(self) -> list:
        return [DynamicsTask.default(self._defaults)] * self.num_envs

    def _task_value(self, task):
        return 0.0  # the reward reads nothing from the task

    def _apply_task(self, model, task) -> None:
        apply_dynamics(model, self._defaults, task)

    def _observation_size(self) -> int:
        return self.model.nq - 1 + self.model.nv

    def _initial_state(self, rng, data) -> None:
        # The same draws, in the same order, as gymnasium's reset_model.
        data.qpos[:] = self._init_qpos + rng.uniform(-self._noise, self._noise, size=self.model.nq)
        data.qvel[:] = self._init_qvel + rng.uniform(-self._noise, self._noise, size=self.model.nv)

    def _observe(self) -> np.ndarray:
        return np.concatenate([self.qpos[:, 1:], np.clip(self.qvel, -10.0, 10.0)], axis=1)

    def _healthy(self) -> np.ndarray:
        s = self._single
        z, angle = self.qpos[:, 1], self.qpos[:, 2]
        healthy = (s._healthy_z_range[0] < z) & (z < s._healthy_z_range[1])
        healthy &= (s._healthy_angle_range[0] < angle) & (angle < s._healthy_angle_range[1])
        if hasattr(s, "_healthy_state_range"):  # the hopper's: every state entry but x and z inside the range
            low, high = s._healthy_state_range
            rest = np.concatenate([self.qpos[:, 2:], self.qvel], axis=1)
            healthy &= np.all((low < rest) & (rest < high), axis=1)
        return healthy

    def _outcome(self, actions, before, stepped):
        s = self._single
        x_velocity = (self.qpos[:, 0] - before[:, self._qpos_at]) / self.dt
        healthy = self._healthy()
        forward = s._forward_reward_weight * x_velocity
        survive = healthy * s._healthy_reward
        ctrl = -s._ctrl_cost_weight * np.sum(np.square(actions), axis=1)
        info = {"reward_forward": forward, "reward_survive": survive, "reward_ctrl": ctrl, "x_velocity": x_velocity,
                "x_position": self.qpos[:, 0].copy()}
        return self._observe(), forward + survive + ctrl, ~healthy, info

    def close_extras(self, **kwargs) -> None:
        super().close_extras(**kwargs)
        self._single.close()
