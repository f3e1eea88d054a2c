"""Humanoid-Direction: walk forwards or backwards (ProMP's `humanoid_rand_direc.py`, learn2learn's
HumanoidForwardBackward), on gymnasium's Humanoid-v5.

ProMP's reward is gymnasium's Humanoid reward with the forward term signed by the task: its
`0.25 d (x' - x) / timestep` with frame skip 5 is `1.25 d v` (v the centre of mass's x velocity over the env step),
gymnasium's forward weight 1.25; control cost 0.1 sum(ctrl^2), contact cost min(5e-7 sum(cfrc_ext^2), 10), alive
bonus 5, termination when the torso height leaves [1, 2], reset noise U(-0.01, 0.01): all gymnasium-v5 defaults.
The policy acts in [-1, 1], scaled to the motors' [-0.4, 0.4], as ProMP's `normalize` wrapper did.
Departures: gymnasium-v5 drops from the observation the rows that are always zero in ProMP's (the world body's
inertia, velocity and contact force, the free joint's actuator force: 348 numbers instead of 376) and pays the alive
bonus only while healthy (ProMP's also on the step that ends the episode). As in gymnasium (and in ProMP's MuJoCo
1.5) the derived quantities after a step (centre of mass, inertias, velocities, contact forces) are those of the
forward pass at the start of the step's last simulator step.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium.envs.mujoco as gymnasium_mujoco  # noqa: F401 (registers the assets' path)
import mujoco
import numpy as np
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
from gymnasium.spaces import Box
from metarl.envs.mujoco_batch import MujocoTaskBatch
from metarl.envs.tasks import TaskEnv, check_count, checked_task, is_direction

HORIZON = 200  # ProMP's and learn2learn's


@dataclass(frozen=True)
class HumanoidDirTask:
    """Walk forwards (direction=+1) or backwards (direction=-1) along x."""

    direction: float


def sample_direction_tasks(rng: np.random.Generator, n: int) -> list[HumanoidDirTask]:
    """Directions -1 or +1 with probability 1/2 each (ProMP's humanoid_rand_direc.py)."""
    return [HumanoidDirTask(float(d)) for d in rng.choice([-1.0, 1.0], size=check_count(n))]


def check_direction_task(task) -> HumanoidDirTask:
    """Return `task` if it is a valid Humanoid-Direction task, else raise ValueError."""
    return checked_task(task, HumanoidDirTask, "humanoid-dir", "direction", is_direction, "-1.0 or +1.0")


def mass_centre_x(body_mass: np.ndarray, xipos: np.ndarray) -> np.ndarray:
    """x of the centre of mass from every body's mass and COM position (last two axes: bodies, xyz)."""
    return np.sum(body_mass[:, None] * xipos, axis=-2)[..., 0] / np.sum(body_mass)


class HumanoidDirEnv(TaskEnv, HumanoidEnv):
    """Humanoid-Direction: walk forwards or backwards (ProMP's humanoid_rand_direc.py).

    Tasks: `HumanoidDirTask(direction)`, direction in {-1, +1} with probability 1/2 each.
    Reward: `1.25 d v + 5 - 0.1 sum(u^2) - min(5e-7 sum(cfrc_ext^2), 10)`. Here `v` is the centre of mass's x
    velocity over the env step, `u = 0.4 a` the motors' control for the action `a` clipped to [-1, 1]^17 (ProMP's
    normalize wrapper), and the alive bonus 5 is paid while healthy; info holds reward_forward, reward_survive,
    reward_ctrl, reward_contact (they sum to the reward).
    Observation, physics (frame skip 5, dt 0.015), reset noise: gymnasium Humanoid-v5 (348 numbers). Episode end:
    torso height outside [1, 2]; time limit 200.
    """

    horizon = HORIZON
    _default_task = HumanoidDirTask(1.0)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # ProMP's normalize wrapper: the policy acts in [-1, 1], scaled to the motors' range [-0.4, 0.4].
        self._ctrl_scale = self.model.actuator_ctrlrange[:, 1].copy()
        self.action_space = Box(-1.0, 1.0, self.action_space.shape, np.float32)

    def do_simulation(self, ctrl, n_frames) -> None:
        super().do_simulation(np.asarray(ctrl) * self._ctrl_scale, n_frames)
    _check = staticmethod(check_direction_task)
    _sample = staticmethod(sample_direction_tasks)
    _value = staticmethod(lambda task: task.direction)

    def _get_rew(self, x_velocity: float, action):
        reward, terms = super()._get_rew(x_velocity, action)
        forward = self.task.direction * terms["reward_forward"]
        terms["reward_forward"] = forward
        return float(forward + terms["reward_survive"] + terms["reward_ctrl"] + terms["reward_contact"]), terms


class HumanoidBatch(MujocoTaskBatch):
    """Many Humanoid-Direction copies: gymnasium's physics stepped by `mujoco.rollout`, then the derived quantities
    gymnasium's env reads after mj_step recomputed per copy (a forward pass at the state before the last simulator
    step, completed by mj_rnePostConstraint). Same draws and formulas as the single env (tested step for step: to
    round-off until the feet touch the floor, then within the humanoid's PGS solver's unfinished work, as rollout
    starts each step's solver cold where the single env warm-starts it: 4e-4 of the observations' size)."""

    family = HumanoidDirEnv
    reads_derived = True
    derived_at = "last-substep"

    def __init__(self, num_envs: int, *, num_threads: int = 1, max_episode_steps: int = HORIZON):
        single = HumanoidEnv()  # gymnasium's model, constants and initial state, read once
        self.frame_skip = single.frame_skip
        self._forward_weight = single._forward_reward_weight
        self._ctrl_weight = single._ctrl_cost_weight
        self._contact_weight = single._contact_cost_weight
        self._contact_max = single._contact_cost_range[1]
        self._healthy_reward = single._healthy_reward
        self._healthy_z = single._healthy_z_range
        self._noise = single._reset_noise_scale
        self._init_qpos, self._init_qvel = single.init_qpos.copy(), single.init_qvel.copy()
        model = single.model
        single.close()
        super().__init__(num_envs, model, num_threads=num_threads, max_episode_steps=max_episode_steps)

    def _allocate(self, n: int) -> None:
        m = self.model
        self._cinert = np.zeros((n, m.nbody, 10))
        self._cvel = np.zeros((n, m.nbody, 6))
        self._actuator = np.zeros((n, m.nv))
        self._contact = np.zeros((n, m.nbody, 6))
        self._xipos = np.zeros((n, m.nbody, 3))
        self._mass_x = np.zeros(n)
        self._views = {}

    def _action_bounds(self):
        return -np.ones(self.model.nu), np.ones(self.model.nu)

    def _controls(self, actions):
        return actions * self.model.actuator_ctrlrange[:, 1]

    def _observation_size(self) -> int:
        m = self.model
        return (m.nq - 2) + m.nv + (m.nbody - 1) * (10 + 6 + 6) + (m.nv - 6)

    def _initial_state(self, rng, data) -> None:
        # The same draws, in the same order, as gymnasium's Humanoid-v5 reset_model.
        data.qpos[:] = self._init_qpos + rng.uniform(-self._noise, self._noise, size=self.model.nq)
        data.qvel[:] = self._init_qvel + rng.uniform(-self._noise, self._noise, size=self.model.nv)

    def _derive(self, model, data) -> None:
        # After reset only (steps run their last simulator step per copy): gymnasium's reset runs mj_forward on
        # freshly reset data, so its contact forces read zero.
        mujoco.mj_forward(model, data)
        data.cfrc_ext[:] = 0.0

    def _read(self, data, i) -> None:
        # Views of the scratch data's arrays made once (its buffers never move); the arithmetic runs vectorised.
        views = self._views.get(id(data))
        if views is None:
            views = self._views[id(data)] = (data.cinert, data.cvel, data.qfrc_actuator, data.cfrc_ext, data.xipos)
        self._cinert[i], self._cvel[i], self._actuator[i], self._contact[i], self._xipos[i] = views

    def _observe(self) -> np.ndarray:
        n = self.num_envs
        return np.concatenate([self.qpos[:, 2:], self.qvel, self._cinert[:, 1:].reshape(n, -1),
                               self._cvel[:, 1:].reshape(n, -1), self._actuator[:, 6:],
                               self._contact[:, 1:].reshape(n, -1)], axis=1)

    def reset(self, *, seed=None, options: dict | None = None):
        result = super().reset(seed=seed, options=options)
        self._mass_x = mass_centre_x(self.model.body_mass, self._xipos)
        return result

    def _outcome(self, actions, before, stepped):
        mass_x_before, self._mass_x = self._mass_x, mass_centre_x(self.model.body_mass, self._xipos)
        x_velocity = (self._mass_x - mass_x_before) / self.dt
        z = self.qpos[:, 2]
        healthy = (self._healthy_z[0] < z) & (z < self._healthy_z[1])
        forward = self._task_values * self._forward_weight * x_velocity
        survive = healthy * self._healthy_reward
        ctrl = -self._ctrl_weight * np.sum(np.square(self._controls(actions)), axis=1)
        contact_sq = np.sum(np.square(self._contact), axis=(1, 2))
        contact = -np.minimum(self._contact_weight * contact_sq, self._contact_max)
        info = {"reward_forward": forward, "reward_survive": survive, "reward_ctrl": ctrl, "reward_contact": contact,
                "x_velocity": x_velocity}
        return self._observe(), forward + survive + ctrl + contact, ~healthy, info
