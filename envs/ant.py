"""Ant-Velocity, Ant-Direction and Ant-Goal: the MAML code's Ant task families, rebuilt on current MuJoCo.

Definitions follow the MAML code (Finn et al., cbfinn/maml_rl: rllab's `ant_env_rand.py`, `ant_env_rand_direc.py`,
`ant_env_rand_goal.py` and its `ant.xml`; see shared/reference/families.md). The model is gymnasium's `ant.xml`
edited in code (`ant_model`) to the reference's physics: time step 0.02 s with RK4, one simulator step per action,
contact softness `solimp = (0.8, 0.8, 0.01)`. Gymnasium's motors (gear 150, control in [-1, 1]) are the reference's
(gear 1, control in [-150, 150]) behind rllab's `normalize`, so the policy acts in [-1, 1] in both.

Departures that remain: MuJoCo 4 against MuJoCo 1.31 (its Newton solver and contact model, where 1.31 ran PGS),
which no setting recovers; the reference's model also carries a texture and light nobody reads. Quantities the
observation and reward read after a step come from a forward pass at the new state, as rllab's `forward_dynamics`
ran one; current MuJoCo computes the external contact forces there only on request (`mj_rnePostConstraint`), so
they are requested (a bare `mj_step` leaves them zero, the known cause of Ant reimplementations that differ).
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass

import gymnasium.envs.mujoco as gymnasium_mujoco
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.spaces import Box
from metarl.envs.mujoco_batch import MujocoTaskBatch, after_step_forward
from metarl.envs.tasks import TaskEnv, check_count, checked_task, is_direction, is_number_in

HORIZON = 200
TIMESTEP = 0.02  # the reference's ant.xml: <option timestep="0.02" integrator="RK4"/>, frame skip 1
SOLIMP = (0.8, 0.8, 0.01)  # the reference's geom default (gymnasium's model leaves MuJoCo's default)
# The reference's <numeric name="init_qpos">: torso at height 0.55, upright, ankles bent by +-1 rad.
INIT_QPOS = (0.0, 0.0, 0.55, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0)
QPOS_NOISE, QVEL_NOISE = 0.01, 0.1  # rllab's reset: qpos + 0.01 N(0, 1), qvel + 0.1 N(0, 1)
CTRL_COST_WEIGHT = 0.005  # 0.5e-2 * sum((a / scaling)^2), a / scaling the action in [-1, 1]
CONTACT_COST_WEIGHT = 0.0005  # 0.5e-3 * sum(clip(cfrc_ext, -1, 1)^2)
SURVIVE_REWARD = 0.05
HEALTHY_Z = (0.2, 1.0)  # the episode ends when the torso height leaves [0.2, 1.0] or the state is not finite
VELOCITY_RANGE = (0.0, 3.0)
GOAL_RANGE = (-3.0, 3.0)
TORSO = 1  # body id of the torso, the root of the whole ant
OBSERVATION_SIZE = 15 + 14 + 14 * 6 + 9 + 3


@dataclass(frozen=True)
class AntVelTask:
    """Move at `velocity` (m/s) along x."""

    velocity: float


@dataclass(frozen=True)
class AntDirTask:
    """Move forwards (direction=+1) or backwards (direction=-1) along x."""

    direction: float


@dataclass(frozen=True)
class AntGoalTask:
    """Bring the centre of mass to `goal` = (x, y)."""

    goal: tuple[float, float]


def sample_velocity_tasks(rng: np.random.Generator, n: int) -> list[AntVelTask]:
    """Goal velocities uniform on [0, 3] (the MAML code's ant_env_rand.py)."""
    return [AntVelTask(float(v)) for v in rng.uniform(*VELOCITY_RANGE, size=check_count(n))]


def sample_direction_tasks(rng: np.random.Generator, n: int) -> list[AntDirTask]:
    """Directions -1 or +1 with probability 1/2 each: the MAML code draws g ~ U[0, 3] and goes backwards when
    g < 1.5, the same distribution."""
    return [AntDirTask(float(d)) for d in rng.choice([-1.0, 1.0], size=check_count(n))]


def sample_goal_tasks(rng: np.random.Generator, n: int) -> list[AntGoalTask]:
    """Goal positions uniform on [-3, 3]^2 (the MAML code's ant_env_rand_goal.py)."""
    return [AntGoalTask((float(x), float(y))) for x, y in rng.uniform(*GOAL_RANGE, size=(check_count(n), 2))]


def check_velocity_task(task) -> AntVelTask:
    """Return `task` if it is a valid Ant-Velocity task, else raise ValueError."""
    return checked_task(task, AntVelTask, "ant-vel", "velocity", is_number_in(*VELOCITY_RANGE), "a number in [0, 3]")


def check_direction_task(task) -> AntDirTask:
    """Return `task` if it is a valid Ant-Direction task, else raise ValueError."""
    return checked_task(task, AntDirTask, "ant-dir", "direction", is_direction, "-1.0 or +1.0")


def check_goal_task(task) -> AntGoalTask:
    """Return `task` if it is a valid Ant-Goal task, else raise ValueError."""
    in_range = is_number_in(*GOAL_RANGE)
    return checked_task(task, AntGoalTask, "ant-goal", "goal",
                        lambda g: isinstance(g, tuple) and len(g) == 2 and all(in_range(x) for x in g),
                        "(x, y) with x, y in [-3, 3]")


def velocity_reward(velocity, com_velocity, com_xy):
    """Forward term of Ant-Velocity: -|v_x - g| + 1.0 (the reference's "make it happy" offset), arrays or scalars."""
    return -np.abs(com_velocity - velocity) + 1.0


def direction_reward(direction, com_velocity, com_xy):
    """Forward term of Ant-Direction: d * v_x."""
    return direction * com_velocity


def goal_reward(goal, com_velocity, com_xy):
    """Forward term of Ant-Goal: -L1(com_xy - goal) + 4.0."""
    return -np.sum(np.abs(com_xy - goal), axis=-1) + 4.0


def cost_terms(action, clipped_contact_forces) -> tuple:
    """(reward_ctrl, reward_contact) of every Ant family: -0.005 sum(a^2) with `a` the action in [-1, 1], and
    -0.0005 sum(clip(cfrc_ext, -1, 1)^2) over all bodies; last axes summed."""
    ctrl = -CTRL_COST_WEIGHT * np.sum(np.square(action), axis=-1)
    contact = -CONTACT_COST_WEIGHT * np.sum(np.square(clipped_contact_forces), axis=(-2, -1))
    return ctrl, contact


def healthy(qpos, qvel):
    """Whether the ant goes on: the state is finite and the torso height is in [0.2, 1.0] (last axis: the state)."""
    finite = np.isfinite(qpos).all(axis=-1) & np.isfinite(qvel).all(axis=-1)
    z = qpos[..., 2]
    return finite & (z >= HEALTHY_Z[0]) & (z <= HEALTHY_Z[1])


@functools.cache
def _base_model() -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_file(os.path.join(os.path.dirname(gymnasium_mujoco.__file__), "assets", "ant.xml"))
    spec.option.timestep = TIMESTEP
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_RK4
    for geom in spec.geoms:
        geom.solimp[:3] = SOLIMP
    # Two sensors that make every forward pass compute what MuJoCo 1.31's always did and the Ant reads: an
    # accelerometer needs mj_rnePostConstraint (the external contact forces, cfrc_ext), the subtree's linear
    # velocity needs mj_subtreeVel. Sensors change no physics (tested: the same trajectory, bit for bit).
    spec.body("torso").add_site(name="torso_site")
    spec.add_sensor(name="torso_accelerometer", type=mujoco.mjtSensor.mjSENS_ACCELEROMETER,
                    objtype=mujoco.mjtObj.mjOBJ_SITE, objname="torso_site")
    spec.add_sensor(name="ant_com_velocity", type=mujoco.mjtSensor.mjSENS_SUBTREELINVEL,
                    objtype=mujoco.mjtObj.mjOBJ_BODY, objname="torso")
    return spec.compile()


def ant_model() -> mujoco.MjModel:
    """A fresh copy of the reference's Ant model: gymnasium's ant.xml with time step 0.02 (RK4) and solimp
    (0.8, 0.8, 0.01); the rest of the two files agree (geometry, joints, ranges, armature, damping, friction). Its
    two sensors make a plain forward pass compute the contact forces and centre-of-mass velocity."""
    return copy.copy(_base_model())


def observe(data: mujoco.MjData) -> np.ndarray:
    """The reference's observation after a forward pass: qpos (15), qvel (14), clip(cfrc_ext, -1, 1) (14 x 6),
    the torso's rotation matrix (9) and its subtree's centre of mass (3): 125 numbers."""
    return np.concatenate([data.qpos, data.qvel, np.clip(data.cfrc_ext, -1.0, 1.0).ravel(), data.xmat[TORSO],
                           data.subtree_com[TORSO]])


class _TaskAnt(TaskEnv, MujocoEnv):
    """The reference's Ant whose forward reward is set by a task; subclasses name the task type and its formula."""

    horizon = HORIZON
    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"], "render_fps": 50}
    _forward = None  # the forward-reward formula (scalars or arrays)

    def __init__(self, **kwargs):
        observation_space = Box(-np.inf, np.inf, (OBSERVATION_SIZE,), np.float64)
        path = os.path.join(os.path.dirname(gymnasium_mujoco.__file__), "assets", "ant.xml")
        super().__init__(path, 1, observation_space=observation_space, **kwargs)

    def _initialize_simulation(self):
        model = ant_model()
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def reset_model(self):
        qpos = np.array(INIT_QPOS) + QPOS_NOISE * self.np_random.standard_normal(self.model.nq)
        qvel = QVEL_NOISE * self.np_random.standard_normal(self.model.nv)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        after_step_forward(self.model, self.data)
        return observe(self.data)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data)
        after_step_forward(self.model, self.data)
        contact = np.clip(self.data.cfrc_ext, -1.0, 1.0)
        com_velocity = float(self.data.subtree_linvel[TORSO, 0])
        com_xy = self.data.subtree_com[TORSO, :2].copy()
        forward = float(self._forward(np.asarray(self._value(self.task)), com_velocity, com_xy))
        ctrl, contact_cost = (float(x) for x in cost_terms(action, contact))
        reward = forward + ctrl + contact_cost + SURVIVE_REWARD
        terminated = not bool(healthy(self.data.qpos, self.data.qvel))
        info = {"task": self.task, "reward_forward": forward, "reward_ctrl": ctrl, "reward_contact": contact_cost,
                "reward_survive": SURVIVE_REWARD, "com_velocity": com_velocity, "com_position": com_xy}
        if self.render_mode == "human":
            self.render()
        return observe(self.data), reward, terminated, False, info


class AntVelEnv(_TaskAnt):
    """Ant-Velocity: move at a goal velocity along x (the MAML code's ant_env_rand.py).

    Tasks: `AntVelTask(velocity)`, velocity uniform on [0, 3].
    Reward: `-|v - g| + 1.0 - 0.005 sum(a^2) - 0.0005 sum(clip(cfrc_ext, -1, 1)^2) + 0.05`. Here `v` is the x
    velocity of the ant's centre of mass after the step and `a` the action clipped to [-1, 1]^8; info holds
    reward_forward, reward_ctrl, reward_contact, reward_survive (they sum to the reward).
    Observation: qpos, qvel, clipped contact forces, torso rotation and centre of mass (125). Physics: time step
    0.02 (RK4), one step per action. Episode end: torso height outside [0.2, 1.0] or a non-finite state; time limit
    200.
    """

    _default_task = AntVelTask(1.5)
    _forward = staticmethod(velocity_reward)
    _check = staticmethod(check_velocity_task)
    _sample = staticmethod(sample_velocity_tasks)
    _value = staticmethod(lambda task: task.velocity)


class AntDirEnv(_TaskAnt):
    """Ant-Direction: move forwards or backwards along x (the MAML code's ant_env_rand_direc.py).

    Tasks: `AntDirTask(direction)`, direction in {-1, +1} with probability 1/2 each.
    Reward: `d * v - 0.005 sum(a^2) - 0.0005 sum(clip(cfrc_ext, -1, 1)^2) + 0.05`. Here `v` is the x velocity of
    the ant's centre of mass after the step; info terms as Ant-Velocity's.
    Observation, physics and episode end: as Ant-Velocity.
    """

    _default_task = AntDirTask(1.0)
    _forward = staticmethod(direction_reward)
    _check = staticmethod(check_direction_task)
    _sample = staticmethod(sample_direction_tasks)
    _value = staticmethod(lambda task: task.direction)


class AntGoalEnv(_TaskAnt):
    """Ant-Goal: bring the centre of mass to a goal position (the MAML code's ant_env_rand_goal.py).

    Tasks: `AntGoalTask(goal)`, goal uniform on [-3, 3]^2 (the MAML code's). ProMP's goals fill a disk of radius 3,
    its ant never terminates and its reward has no offset; this family keeps the MAML suite's physics, termination
    and offsets, so that the three Ant families differ only in the task.
    Reward: `-|x - g_x| - |y - g_y| + 4.0 - 0.005 sum(a^2) - 0.0005 sum(clip(cfrc_ext, -1, 1)^2) + 0.05`. Here
    (x, y) is the ant's centre of mass after the step; info terms as Ant-Velocity's.
    Observation, physics and episode end: as Ant-Velocity.
    """

    _default_task = AntGoalTask((0.0, 0.0))
    _forward = staticmethod(goal_reward)
    _check = staticmethod(check_goal_task)
    _sample = staticmethod(sample_goal_tasks)
    _value = staticmethod(lambda task: task.goal)


class AntBatch(MujocoTaskBatch):
    """Many copies of an Ant family: the reference's physics stepped by `mujoco.rollout` over all copies, then one
    forward pass per copy at its new state (for the contact forces and centre of mass the observation and reward
    read; the model's sensors make mj_forward compute them). Same task contract, draws and formulas as the single
    envs (tested step for step)."""

    reads_derived = True
    derived_at = "after"

    def __init__(self, family: type[_TaskAnt], num_envs: int, *, num_threads: int = 1,
                 max_episode_steps: int = HORIZON):
        self.family = family
        super().__init__(num_envs, ant_model(), num_threads=num_threads, max_episode_steps=max_episode_steps)

    def _allocate(self, n: int) -> None:
        self._raw_contact = np.zeros((n, 14, 6))
        self._xmat = np.zeros((n, 9))
        self._com = np.zeros((n, 3))
        self._com_velocity = np.zeros(n)
        self._views = {}

    def _derive(self, model, data) -> None:
        mujoco.mj_forward(model, data)  # the model's sensors add mj_rnePostConstraint and mj_subtreeVel

    def _observation_size(self) -> int:
        return OBSERVATION_SIZE

    def _initial_state(self, rng, data) -> None:
        # The same draws, in the same order, as _TaskAnt.reset_model.
        data.qpos[:] = np.array(INIT_QPOS) + QPOS_NOISE * rng.standard_normal(self.model.nq)
        data.qvel[:] = QVEL_NOISE * rng.standard_normal(self.model.nv)

    def _read(self, data, i) -> None:
        # Views of the scratch data's arrays made once (its buffers never move): four copies per copy and step.
        views = self._views.get(id(data))
        if views is None:
            views = self._views[id(data)] = (data.cfrc_ext, data.xmat[TORSO], data.subtree_com[TORSO],
                                             data.subtree_linvel[TORSO])
        self._raw_contact[i] = views[0]
        self._xmat[i] = views[1]
        self._com[i] = views[2]
        self._com_velocity[i] = views[3][0]

    def _observe(self) -> np.ndarray:
        self._contact = np.clip(self._raw_contact, -1.0, 1.0)
        return np.concatenate([self.qpos, self.qvel, self._contact.reshape(self.num_envs, -1), self._xmat,
                               self._com], axis=1)

    def _outcome(self, actions, before, stepped):
        values = self._task_values
        obs = self._observe()
        forward = self.family._forward(values, self._com_velocity, self._com[:, :2])
        ctrl, contact = cost_terms(actions, self._contact)
        survive = np.full(self.num_envs, SURVIVE_REWARD)
        rewards = forward + ctrl + contact + survive
        terminated = ~healthy(self.qpos, self.qvel)
        info = {"reward_forward": forward, "reward_ctrl": ctrl, "reward_contact": contact, "reward_survive": survive,
                "com_velocity": self._com_velocity.copy(), "com_position": self._com[:, :2].copy()}
        return obs, rewards, terminated, info
