"""HalfCheetah-Direction and HalfCheetah-Velocity: task distributions on gymnasium's HalfCheetah-v5.

Definitions follow Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML 2017, section 5.3 (see shared/reference/anil-rl.md). The model, physics (frame skip 5, dt 0.05), observation
(qpos[1:] and qvel, 17 numbers) and reset noise are gymnasium's HalfCheetah-v5; only the reward depends on the task.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import gymnasium
import mujoco
import mujoco.rollout
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from metarl.envs.mujoco_batch import MujocoTaskBatch
from metarl.envs.tasks import TaskEnv, check_count, checked_task, is_direction, is_number_in

CTRL_COST_WEIGHT = 0.05  # reference: reward = ... - 0.05 * sum(a^2), a clipped to the action space [-1, 1]^6
HORIZON = 200
# The v_x the forward reward reads: "displacement", the torso's x displacement over the env step / dt (gymnasium's
# HalfCheetah); "com", the x velocity of the whole cheetah's centre of mass at the state after the step (the MAML
# code's rllab cheetah: get_body_comvel("torso"), the torso subtree's mass-weighted body velocities).
FORWARD_VELOCITIES = ("displacement", "com")


@dataclass(frozen=True)
class CheetahDirTask:
    """Run forwards (direction=+1) or backwards (direction=-1)."""

    direction: float


@dataclass(frozen=True)
class CheetahVelTask:
    """Run at `velocity` (m/s) along x."""

    velocity: float


def direction_reward(direction, x_velocity):
    """Forward term of HalfCheetah-Direction: d * v_x (scalars or arrays)."""
    return direction * x_velocity


def velocity_reward(velocity, x_velocity):
    """Forward term of HalfCheetah-Velocity: -|v_x - g| (scalars or arrays: numpy's, or JAX's on MJX)."""
    return -abs(x_velocity - velocity)


def sample_direction_tasks(rng: np.random.Generator, n: int) -> list[CheetahDirTask]:
    """Directions -1 or +1 with probability 1/2 each (MAML paper, sec. 5.3)."""
    return [CheetahDirTask(float(d)) for d in rng.choice([-1.0, 1.0], size=check_count(n))]


def sample_velocity_tasks(rng: np.random.Generator, n: int) -> list[CheetahVelTask]:
    """Goal velocities uniform on [0, 2] (MAML paper, sec. 5.3)."""
    return [CheetahVelTask(float(v)) for v in rng.uniform(0.0, 2.0, size=check_count(n))]


def check_direction_task(task) -> CheetahDirTask:
    """Return `task` if it is a valid HalfCheetah-Direction task, else raise ValueError."""
    return checked_task(task, CheetahDirTask, "cheetah-dir", "direction", is_direction, "-1.0 or +1.0")


def check_velocity_task(task) -> CheetahVelTask:
    """Return `task` if it is a valid HalfCheetah-Velocity task, else raise ValueError."""
    return checked_task(task, CheetahVelTask, "cheetah-vel", "velocity", is_number_in(0.0, 2.0), "a number in [0, 2]")


@contextlib.contextmanager
def _model_load_warnings():
    """Load gymnasium's half_cheetah.xml without MuJoCo >= 3.3 appending a deprecation notice to MUJOCO_LOG.TXT.

    The model's `settotalmass` attribute is deprecated (not wrong); that one notice is dropped, any other MuJoCo
    warning is re-raised as a Python warning. The previous handler is restored afterwards.
    """
    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if "settotalmass" not in message:
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def check_forward_velocity(name) -> str:
    """Return `name` if it is one of FORWARD_VELOCITIES, else raise ValueError."""
    if name not in FORWARD_VELOCITIES:
        raise ValueError(f"forward_velocity {name!r} is not one of {', '.join(FORWARD_VELOCITIES)}")
    return name


def com_x_velocity(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    """x velocity of the centre of mass of body 1's subtree (the torso: the whole cheetah) at data's qpos and qvel.

    Runs MuJoCo's kinematics, com and subtree-velocity stages on `data` (its derived quantities change; its state
    does not). The same quantity as rllab's body_comvels[torso]: sum of mass * body COM velocity over the subtree
    divided by its mass (tested against that sum)."""
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    mujoco.mj_comVel(model, data)
    mujoco.mj_subtreeVel(model, data)
    return float(data.subtree_linvel[1, 0])


class _TaskCheetah(TaskEnv, HalfCheetahEnv):
    """HalfCheetah-v5 whose forward reward is set by a task; subclasses name the task type and its formula."""

    horizon = HORIZON
    _forward = None  # the forward-reward formula (scalars or arrays)

    def __init__(self, ctrl_cost_weight: float = CTRL_COST_WEIGHT, reset_noise_scale: float = 0.1,
                 forward_velocity: str = "displacement", **kwargs):
        self.forward_velocity = check_forward_velocity(forward_velocity)
        with _model_load_warnings():
            super().__init__(ctrl_cost_weight=ctrl_cost_weight, reset_noise_scale=reset_noise_scale, **kwargs)

    def _get_rew(self, x_velocity: float, action):
        if self.forward_velocity == "com":  # called by HalfCheetahEnv.step after the physics
            x_velocity = com_x_velocity(self.model, self.data)
        forward = float(self._forward(self._value(self.task), x_velocity))
        # In float64 whatever the action's dtype, as the batched form does (float32 actions would otherwise
        # give a float32 control cost, off from the formula and from HalfCheetahBatch by ~1e-8).
        ctrl = -float(self.control_cost(np.asarray(action, dtype=np.float64)))
        return forward + ctrl, {"reward_forward": forward, "reward_ctrl": ctrl}


class HalfCheetahDirEnv(_TaskCheetah):
    """HalfCheetah-Direction: run forwards or backwards (MAML paper, sec. 5.3).

    Tasks: `CheetahDirTask(direction)`, direction in {-1, +1} with probability 1/2 each.
    Reward: `d * v_x - 0.05 * sum(a^2)` with `a` the action clipped to the action space [-1, 1]^6 (as rllab and the
    MAML code) and `v_x = (x_after - x_before) / dt`, dt = 0.05 (5 frames of 0.01 s), or with
    `forward_velocity="com"` the x velocity of the cheetah's centre of mass after the step (the MAML code's); `info` holds
    `reward_forward` (d * v_x) and `reward_ctrl` (-0.05 * sum(a^2)), which sum to the reward.
    Observation, action space, reset noise: gymnasium HalfCheetah-v5. Episode end: never terminates; time limit 200.
    """

    _default_task = CheetahDirTask(1.0)
    _forward = staticmethod(direction_reward)
    _check = staticmethod(check_direction_task)
    _sample = staticmethod(sample_direction_tasks)
    _value = staticmethod(lambda task: task.direction)


class HalfCheetahVelEnv(_TaskCheetah):
    """HalfCheetah-Velocity: run at a goal velocity (MAML paper, sec. 5.3).

    Tasks: `CheetahVelTask(velocity)`, velocity uniform on [0, 2] (ProMP used [0, 3]; we follow MAML).
    Reward: `-|v_x - g| - 0.05 * sum(a^2)` with `a` the action clipped to the action space [-1, 1]^6 and
    `v_x = (x_after - x_before) / dt` (or, with `forward_velocity="com"`, the centre of mass's x velocity after the
    step); `info` holds `reward_forward` (-|v_x - g|) and `reward_ctrl`, which sum to the reward.
    Observation, action space, reset noise: gymnasium HalfCheetah-v5. Episode end: never terminates; time limit 200.
    """

    _default_task = CheetahVelTask(1.0)
    _forward = staticmethod(velocity_reward)
    _check = staticmethod(check_velocity_task)
    _sample = staticmethod(sample_velocity_tasks)
    _value = staticmethod(lambda task: task.velocity)


class HalfCheetahBatch(MujocoTaskBatch):
    """Many HalfCheetah copies (one MjModel) stepped in one process by MuJoCo's own rollout thread pool.

    Each env step is one `mujoco.rollout` call (metarl.envs.mujoco_batch): `num_threads` C++ threads each run
    frame-skip `mj_step`s over chunks of copies with the GIL released, so no Python runs per copy. rollout resets the
    constraint solver's warm start at every call (a single env carries it), which changes the result at round-off
    level only (about 1e-14 after two steps; tested against the single env), amplified over an episode as any
    round-off is by the chaotic dynamics. Results do not depend on `num_threads`. Copies never terminate.
    `frame_skip` is HalfCheetah-v5's 5 by default; the single env takes the same keyword (gymnasium's), and
    `forward_velocity` (FORWARD_VELOCITIES) too: "com" computes each copy's centre-of-mass velocity after the step
    (MuJoCo's kinematics stages, a few microseconds a copy).
    """

    def __init__(self, family: type[_TaskCheetah], num_envs: int, *, num_threads: int = 2,
                 ctrl_cost_weight: float = CTRL_COST_WEIGHT, reset_noise_scale: float = 0.1,
                 max_episode_steps: int = HORIZON, frame_skip: int = 5, forward_velocity: str = "displacement"):
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1 (simulator steps per env step), got {frame_skip!r}")
        self.forward_velocity = check_forward_velocity(forward_velocity)
        self.family = family
        self.frame_skip = int(frame_skip)
        self.reads_derived = self.forward_velocity == "com"
        self._ctrl_cost_weight = ctrl_cost_weight
        self._noise = reset_noise_scale
        path = os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", "half_cheetah.xml")
        with _model_load_warnings():
            model = mujoco.MjModel.from_xml_path(path)
        data = mujoco.MjData(model)
        self._init_qpos, self._init_qvel = data.qpos.copy(), data.qvel.copy()
        super().__init__(num_envs, model, num_threads=num_threads, max_episode_steps=max_episode_steps)

    def _allocate(self, n: int) -> None:
        self._com_velocity = np.zeros(n)

    def _observation_size(self) -> int:
        return self.model.nq - 1 + self.model.nv

    def _initial_state(self, rng, data) -> None:
        # Same draws, in the same order, as HalfCheetah-v5's reset_model.
        data.qpos[:] = self._init_qpos + rng.uniform(-self._noise, self._noise, size=self.model.nq)
        data.qvel[:] = self._init_qvel + self._noise * rng.standard_normal(self.model.nv)

    def _derive(self, model, data) -> None:
        com_x_velocity(model, data)  # MuJoCo's kinematics and velocity stages only, for subtree_linvel

    def _read(self, data, i) -> None:
        self._com_velocity[i] = data.subtree_linvel[1, 0]

    def _observe(self) -> np.ndarray:
        return np.concatenate([self.qpos[:, 1:], self.qvel], axis=1)

    def _outcome(self, actions, before, stepped):
        x_before = before[:, self._qpos_at]
        x_velocity = (self.qpos[:, 0] - x_before) / self.dt
        if self.forward_velocity == "com":
            x_velocity = self._com_velocity.copy()
        forward = self.family._forward(self._task_values, x_velocity)
        ctrl = -self._ctrl_cost_weight * np.sum(np.square(actions), axis=1)
        info = {"reward_forward": forward, "reward_ctrl": ctrl, "x_velocity": x_velocity,
                "x_position": self.qpos[:, 0].copy()}
        return self._observe(), forward + ctrl, np.zeros(self.num_envs, dtype=bool), info
