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
from gymnasium.spaces import Box
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space

from metarl.envs.vector import TaskVectorEnv

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
    """Forward term of HalfCheetah-Velocity: -|v_x - g| (scalars or arrays)."""
    return -np.abs(x_velocity - velocity)


def sample_direction_tasks(rng: np.random.Generator, n: int) -> list[CheetahDirTask]:
    """Directions -1 or +1 with probability 1/2 each (MAML paper, sec. 5.3)."""
    return [CheetahDirTask(float(d)) for d in rng.choice([-1.0, 1.0], size=_count(n))]


def sample_velocity_tasks(rng: np.random.Generator, n: int) -> list[CheetahVelTask]:
    """Goal velocities uniform on [0, 2] (MAML paper, sec. 5.3)."""
    return [CheetahVelTask(float(v)) for v in rng.uniform(0.0, 2.0, size=_count(n))]


def check_direction_task(task) -> CheetahDirTask:
    """Return `task` if it is a valid HalfCheetah-Direction task, else raise ValueError."""
    if not isinstance(task, CheetahDirTask):
        raise ValueError(f"cheetah-dir: expected a CheetahDirTask, got {task!r} ({type(task).__name__})")
    if task.direction not in (-1.0, 1.0):
        raise ValueError(f"cheetah-dir: direction {task.direction!r} is out of range; allowed: -1.0 or +1.0")
    return task


def check_velocity_task(task) -> CheetahVelTask:
    """Return `task` if it is a valid HalfCheetah-Velocity task, else raise ValueError."""
    if not isinstance(task, CheetahVelTask):
        raise ValueError(f"cheetah-vel: expected a CheetahVelTask, got {task!r} ({type(task).__name__})")
    v = task.velocity
    if not (isinstance(v, (int, float)) and np.isfinite(v) and 0.0 <= v <= 2.0):
        raise ValueError(f"cheetah-vel: velocity {v!r} is out of range; allowed: a number in [0, 2]")
    return task


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


def _count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_tasks: n must be a non-negative int, got {n!r}")
    return int(n)


class _TaskCheetah(HalfCheetahEnv):
    """HalfCheetah-v5 whose forward reward is set by a task; subclasses name the task type."""

    horizon = HORIZON
    # Set by each family: its default task, the forward-reward formula, the task check, the sampler and the
    # number the formula reads from a task. Each works on scalars and arrays, so the batched form shares them.
    _default_task = None
    _forward = None
    _check = None
    _sample = None
    _value = None

    def __init__(self, ctrl_cost_weight: float = CTRL_COST_WEIGHT, reset_noise_scale: float = 0.1,
                 forward_velocity: str = "displacement", **kwargs):
        self.forward_velocity = check_forward_velocity(forward_velocity)
        with _model_load_warnings():
            super().__init__(ctrl_cost_weight=ctrl_cost_weight, reset_noise_scale=reset_noise_scale, **kwargs)
        self._task = self._default_task

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list:
        """`n` tasks drawn from this family's distribution using only `rng`."""
        return self._sample(rng, n)

    @property
    def task(self):
        return self._task

    @task.setter
    def task(self, task) -> None:
        self._task = self._check(task)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # The task travels in options; reset() without it keeps the current task (vector autoreset relies on this).
        if options and "task" in options:
            self.task = options["task"]
        obs, info = super().reset(seed=seed, options=options)
        info["task"] = self._task
        return obs, info

    def step(self, action):
        # Clipped to the action space first, as rllab and the MAML code do: MuJoCo clamps the control for the
        # physics anyway (ctrllimited), but the control cost would otherwise charge the unclipped action.
        # A wrongly shaped action goes through unclipped, to gymnasium's own shape error.
        action = np.asarray(action, dtype=np.float64)
        if action.shape == self.action_space.shape:
            action = np.clip(action, self.action_space.low, self.action_space.high)
        obs, reward, terminated, truncated, info = super().step(action)
        info["task"] = self._task
        return obs, reward, terminated, truncated, info

    def _get_rew(self, x_velocity: float, action):
        if self.forward_velocity == "com":  # called by HalfCheetahEnv.step after the physics
            x_velocity = com_x_velocity(self.model, self.data)
        forward = float(self._forward(self._value(self._task), x_velocity))
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


class HalfCheetahBatch(TaskVectorEnv):
    """Many HalfCheetah copies (one MjModel) stepped in one process by MuJoCo's own rollout thread pool.

    The whole batch's physics state lives in one (copies, nstate) array. Each env step is one `mujoco.rollout`
    call: `num_threads` C++ threads each run frame-skip `mj_step`s over chunks of copies with the GIL released, so
    no Python runs per copy. rollout resets the constraint solver's warm start at every call (a single env carries
    it), which changes the result at round-off level only (about 1e-14 after two steps; tested against the single
    env), amplified over an episode as any round-off is by the chaotic dynamics. Results do not depend on
    `num_threads`. Tasks are set per copy with `set_attr("task", tasks)`; `reset(seed=s)` seeds copy i with s + i,
    as gymnasium's vector envs do. Copies never terminate; `truncated` turns True at the family's horizon.
    Actions are clipped to the action space before the simulator and the control cost, as in the single env.
    `frame_skip` is HalfCheetah-v5's 5 by default; the single env takes the same keyword (gymnasium's), and
    `forward_velocity` (FORWARD_VELOCITIES) too: "com" computes each copy's centre-of-mass velocity in Python after
    the step (MuJoCo's kinematics stages, a few microseconds a copy).
    """

    def __init__(self, family: type[_TaskCheetah], num_envs: int, *, num_threads: int = 2,
                 ctrl_cost_weight: float = CTRL_COST_WEIGHT, reset_noise_scale: float = 0.1,
                 max_episode_steps: int = HORIZON, frame_skip: int = 5, forward_velocity: str = "displacement"):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1 (simulator steps per env step), got {frame_skip!r}")
        self.forward_velocity = check_forward_velocity(forward_velocity)
        self.family = family
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self._ctrl_cost_weight = ctrl_cost_weight
        self._noise = reset_noise_scale
        path = os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", "half_cheetah.xml")
        with _model_load_warnings():
            self.model = mujoco.MjModel.from_xml_path(path)
        m = self.model
        self.frame_skip = int(frame_skip)
        self.dt = m.opt.timestep * self.frame_skip
        self._scratch = mujoco.MjData(m)  # for resets and for the rare copy rollout stops early
        self._init_qpos = self._scratch.qpos.copy()
        self._init_qvel = self._scratch.qvel.copy()
        # Full physics state per copy: [time, qpos, qvel] for this model (no actuator, mocap or plugin state).
        self._state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        nstate = mujoco.mj_stateSize(m, self._state_spec)
        self._qpos_at = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_TIME)
        self._qvel_at = self._qpos_at + m.nq
        self._state = np.zeros((num_envs, nstate))
        self._ctrl = np.zeros((num_envs, self.frame_skip, m.nu))  # one control per substep, as rollout reads it
        self._out = np.zeros((num_envs, self.frame_skip, nstate))
        self._models = [m] * num_envs
        self.num_threads = min(num_threads, num_envs)
        # nthread=0 runs on the calling thread; otherwise one MjData per pool thread.
        self._rollout = mujoco.rollout.Rollout(nthread=self.num_threads if self.num_threads > 1 else 0)
        self._thread_datas = [mujoco.MjData(m) for _ in range(self.num_threads)]
        self._rngs = [None] * num_envs
        self._tasks = [family._default_task] * num_envs
        self._tasks_changed()
        self._t = 0
        self.single_observation_space = Box(-np.inf, np.inf, (m.nq - 1 + m.nv,), np.float64)
        lo, hi = m.actuator_ctrlrange.T
        self.single_action_space = Box(lo.astype(np.float32), hi.astype(np.float32), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list:
        return self.family._sample(rng, n)

    def _check_task(self, task):
        return self.family._check(task)

    def _tasks_changed(self) -> None:
        self._task_values = np.array([self.family._value(t) for t in self._tasks])

    @property
    def qpos(self) -> np.ndarray:
        """Joint positions of every copy, (copies, nq) (a view of the batch state)."""
        return self._state[:, self._qpos_at:self._qvel_at]

    @property
    def qvel(self) -> np.ndarray:
        """Joint velocities of every copy, (copies, nv) (a view of the batch state)."""
        return self._state[:, self._qvel_at:self._qvel_at + self.model.nv]

    def reset(self, *, seed=None, options: dict | None = None):
        if options and "task" in options:
            self.set_attr("task", options["task"])
        seeds = _copy_seeds(seed, self.num_envs)
        m, d = self.model, self._scratch
        for i in range(self.num_envs):
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
            rng = self._rngs[i]
            # Same draws, in the same order, as HalfCheetah-v5's reset_model.
            qpos = self._init_qpos + rng.uniform(-self._noise, self._noise, size=m.nq)
            qvel = self._init_qvel + self._noise * rng.standard_normal(m.nv)
            mujoco.mj_resetData(m, d)
            d.qpos[:] = qpos
            d.qvel[:] = qvel
            mujoco.mj_getState(m, d, self._state[i], self._state_spec)
        self._t = 0
        return self._obs(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.model.nu):
            raise ValueError(f"actions must have shape {(self.num_envs, self.model.nu)}, got {actions.shape}")
        # As the single env: the control cost charges the clipped action (MuJoCo clamps the physics anyway).
        actions = np.clip(actions, self.single_action_space.low, self.single_action_space.high)
        x_before = self.qpos[:, 0].copy()
        self._ctrl[:] = actions[:, None, :]
        try:
            # skip_checks: the buffers were shaped for this model in __init__; controls are held over the substeps.
            self._rollout.rollout(self._models, self._thread_datas, self._state, self._ctrl,
                                  nstep=self.frame_skip, state=self._out, skip_checks=True)
        except Exception as exc:  # surface a failing simulator in the caller, never a silent hang
            raise RuntimeError(f"{type(self).__name__}: the simulator failed while stepping "
                               f"{self.num_envs} copies: {exc!r}") from exc
        self._finish_stopped_copies(actions)
        self._state[:] = self._out[:, -1]
        self._t += 1
        x_velocity = (self.qpos[:, 0] - x_before) / self.dt
        if self.forward_velocity == "com":
            x_velocity = self._com_x_velocities()
        forward = self.family._forward(self._task_values, x_velocity)
        ctrl = -self._ctrl_cost_weight * np.sum(np.square(actions), axis=1)
        rewards = forward + ctrl
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.full(self.num_envs, self._t >= self.max_episode_steps)
        info = {"reward_forward": forward, "reward_ctrl": ctrl, "x_velocity": x_velocity,
                "x_position": self.qpos[:, 0].copy()}
        return self._obs(), rewards, terminated, truncated, info

    def _finish_stopped_copies(self, actions: np.ndarray) -> None:
        """Re-step with plain mj_step any copy whose rollout stopped early on a MuJoCo warning (e.g. a diverging
        state, which MuJoCo resets): rollout then repeats the last state, a single env goes on stepping."""
        expected = self._state[:, 0] + self.frame_skip * self.model.opt.timestep
        stopped = np.flatnonzero(np.abs(self._out[:, -1, 0] - expected) > 0.5 * self.model.opt.timestep)
        m, d = self.model, self._scratch
        for i in stopped:
            mujoco.mj_resetData(m, d)
            mujoco.mj_setState(m, d, self._state[i], self._state_spec)
            d.ctrl[:] = actions[i]
            mujoco.mj_step(m, d, self.frame_skip)
            mujoco.mj_getState(m, d, self._out[i, -1], self._state_spec)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.qpos[:, 1:], self.qvel], axis=1)

    def _com_x_velocities(self) -> np.ndarray:
        """com_x_velocity of every copy at its current state."""
        m, d = self.model, self._scratch
        out = np.empty(self.num_envs)
        for i, (qpos, qvel) in enumerate(zip(self.qpos, self.qvel)):
            d.qpos[:] = qpos
            d.qvel[:] = qvel
            out[i] = com_x_velocity(m, d)
        return out

    def close_extras(self, **kwargs) -> None:
        if self._rollout is not None:
            self._rollout.close()
            self._rollout = None


def _copy_seeds(seed, n: int) -> list:
    """Per-copy seeds: None, an int s (copy i gets s + i) or a list of n ints/None."""
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"reset(seed=...): got {len(seeds)} seeds for {n} copies")
    return seeds
