"""What the batched MuJoCo families beyond the cheetahs share: copies stepped by `mujoco.rollout`, one model each.

A family subclasses `MujocoTaskBatch` and says four things: how a copy starts (`_initial_state`, the same draws as
its single env's reset), which quantities it reads from MuJoCo's derived data after a step (`_read`, run on a
forward pass per copy, only for families whose observation or reward needs more than qpos and qvel), how the step
becomes observations, rewards and terminations (`_outcome`, vectorised over copies) and, for families whose task
changes the physics, how a task edits a model (`_apply_task`). Everything else lives here once.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import mujoco
import mujoco.rollout
import numpy as np
from gymnasium.spaces import Box
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space
from metarl.envs.vector import TaskVectorEnv, copy_seeds

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS


def after_step_forward(model: mujoco.MjModel, data: mujoco.MjData) -> None:
    """MuJoCo's forward pass at `data`'s state plus the stages current MuJoCo runs only on request: the external
    contact forces (`cfrc_ext`, by `mj_rnePostConstraint`) and the subtrees' linear velocities (`subtree_linvel`).
    MuJoCo 1.x, which rllab and the MAML code ran on, computed both in every forward pass."""
    mujoco.mj_forward(model, data)
    mujoco.mj_rnePostConstraint(model, data)
    mujoco.mj_subtreeVel(model, data)


class MujocoTaskBatch(TaskVectorEnv):
    """`num_envs` copies of a MuJoCo task family, stepped together by `mujoco.rollout`'s C++ thread pool.

    The physics state of every copy lives in one (copies, nstate) array; each env step is one rollout call over the
    copies still running (a copy that terminated is frozen: same observation, reward 0, `terminated` True, until
    `reset`; the sampler masks those steps anyway). Copies hold one model each (the same object unless the task
    edits the physics), so a task may change masses, frictions or damping per copy at no cost to the step.
    Families whose observation or reward reads MuJoCo's derived quantities (contact forces, centre-of-mass
    velocities) get a forward pass per copy after the step, run on `num_threads` threads with the GIL released.
    `reset(seed=s)` seeds copy i with s + i, as gymnasium's vector envs do; `truncated` turns True at the horizon.
    """

    # Set by each family: its single env class (tasks, checks), frame skip and whether it reads derived data.
    family: type = None
    frame_skip: int = 1
    reads_derived = False
    # "after": a forward pass at the state after the step (rllab's MujocoEnv.forward_dynamics ran one);
    # "last-substep": what gymnasium's MujocoEnv reads, the data its last mj_step left (the derived quantities of that
    # simulator step's own passes, RK4 stages included), completed by mj_rnePostConstraint. For the latter, rollout
    # runs all but the last simulator step and each copy runs its last one with mj_step: the same physics cost.
    derived_at = "after"

    def __init__(self, num_envs: int, model: mujoco.MjModel, *, num_threads: int = 1, max_episode_steps: int):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
        self.num_envs = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.model = model
        self._allocate(self.num_envs)
        m = model
        self.dt = m.opt.timestep * self.frame_skip
        self._scratch = mujoco.MjData(m)
        nstate = mujoco.mj_stateSize(m, _STATE)
        self._qpos_at = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_TIME)
        self._qvel_at = self._qpos_at + m.nq
        self._state = np.zeros((self.num_envs, nstate))
        joint_spec = _STATE | mujoco.mjtState.mjSTATE_CTRL
        self._state_and_ctrl_spec = joint_spec if (mujoco.mj_stateSize(m, joint_spec) == nstate + m.nu
                                                   and m.nplugin == 0) else None
        self._ctrl = np.zeros((self.num_envs, m.nu))
        self._alive = np.ones(self.num_envs, dtype=bool)
        self.num_threads = min(int(num_threads), self.num_envs)
        self._rollout = mujoco.rollout.Rollout(nthread=self.num_threads if self.num_threads > 1 else 0)
        self._thread_datas = [mujoco.MjData(m) for _ in range(self.num_threads)]
        self._pool = ThreadPoolExecutor(self.num_threads) if self.reads_derived and self.num_threads > 1 else None
        self._per_copy_datas = [mujoco.MjData(m) for _ in range(self.num_threads if self._pool else 1)]
        self._rngs = [None] * self.num_envs
        self._models = [m] * self.num_envs
        self._model_copies: list[mujoco.MjModel] = []  # for tasks that edit the physics, reused across task sets
        self._tasks = self._default_tasks()
        self._tasks_changed()
        self._t = 0
        lo, hi = self._action_bounds()
        self.single_action_space = Box(lo.astype(np.float32), hi.astype(np.float32), dtype=np.float32)
        self.single_observation_space = Box(-np.inf, np.inf, (self._observation_size(),), np.float64)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # -- what a family defines -------------------------------------------------------------------------------
    def _allocate(self, n: int) -> None:
        """Allocate the family's per-copy arrays for `n` copies (called in __init__ once `self.model` is set)."""

    def _observation_size(self) -> int:
        raise NotImplementedError

    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The action space's bounds: the model's control range unless the family rescales actions (`_controls`)."""
        return tuple(self.model.actuator_ctrlrange.T)

    def _controls(self, actions: np.ndarray) -> np.ndarray:
        """The simulator's controls for (clipped) actions: the actions themselves unless the family rescales."""
        return actions

    def _initial_state(self, rng: np.random.Generator, data: mujoco.MjData) -> None:
        """Write a copy's initial qpos and qvel into `data` (freshly reset), drawing exactly as the single env."""
        raise NotImplementedError

    def _derive(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """The stages of MuJoCo's pipeline the family reads after a step (and after reset); by default all of them,
        external contact forces and subtree velocities included (after_step_forward)."""
        after_step_forward(model, data)

    def _read(self, data: mujoco.MjData, i: int) -> None:
        """Copy what the family reads from copy i's derived data into the batch's arrays (reads_derived only)."""

    def _outcome(self, actions: np.ndarray, before: np.ndarray, stepped: np.ndarray):
        """(observations, rewards, terminated, info) of the copies in `stepped` (indices), vectorised; `before` is
        their state before the step. Only those rows are used."""
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        """Observations of every copy at its current state (after `_read` where the family reads derived data)."""
        raise NotImplementedError

    def _apply_task(self, model: mujoco.MjModel, task) -> None:
        """Edit `model` (a copy of the family's model) to `task`'s physics; only for families whose task does so."""
        raise NotImplementedError

    edits_physics = False

    # -- shared machinery -----------------------------------------------------------------------------------
    def sample_tasks(self, rng: np.random.Generator, n: int) -> list:
        return self.family._sample(rng, n)

    def _check_task(self, task):
        return self.family._check(task)

    def _default_tasks(self) -> list:
        return [self.family._default_task] * self.num_envs

    def _task_value(self, task):
        """What the family's vectorised reward reads from a task (stacked over copies into `_task_values`)."""
        return self.family._value(task)

    def _tasks_changed(self) -> None:
        self._task_values = np.array([self._task_value(t) for t in self._tasks])
        if not self.edits_physics:
            return
        # One model per distinct task, shared by that task's copies; copies of the base model are kept for reuse.
        distinct = list(dict.fromkeys(self._tasks))
        while len(self._model_copies) < len(distinct):
            self._model_copies.append(copy.copy(self.model))
        by_task = {}
        for task, model in zip(distinct, self._model_copies):
            self._apply_task(model, task)
            by_task[task] = model
        self._models = [by_task[t] for t in self._tasks]

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
        seeds = copy_seeds(seed, self.num_envs)
        d = self._scratch
        for i in range(self.num_envs):
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
            m = self._models[i]
            mujoco.mj_resetData(m, d)
            self._initial_state(self._rngs[i], d)
            mujoco.mj_getState(m, d, self._state[i], _STATE)
        self._ctrl[:] = 0.0
        self._alive[:] = True
        self._t = 0
        if self.reads_derived:
            self._per_copy(np.arange(self.num_envs), self._state)
        return self._observe(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.model.nu):
            raise ValueError(f"actions must have shape {(self.num_envs, self.model.nu)}, got {actions.shape}")
        # As the single envs: costs charge the action clipped to the action space (MuJoCo clamps the physics too).
        actions = np.clip(actions, self.single_action_space.low, self.single_action_space.high)
        stepped = np.flatnonzero(self._alive)
        before = self._state.copy()
        if stepped.size:
            controls = self._controls(actions)
            self._ctrl[stepped] = controls[stepped]
            if self.reads_derived and self.derived_at == "last-substep":
                self._simulate(stepped, before, controls, self.frame_skip - 1)
                self._per_copy(stepped, self._state[stepped], last_step=True)
            else:
                self._simulate(stepped, before, controls, self.frame_skip)
                if self.reads_derived:
                    self._per_copy(stepped, self._state[stepped])
        self._t += 1
        obs, rewards, terminated, info = self._outcome(actions, before, stepped)
        frozen = ~self._alive
        rewards = np.where(frozen, 0.0, rewards)
        for key, value in info.items():
            if key.startswith("reward_"):
                info[key] = np.where(frozen, 0.0, value)
        terminated = terminated | frozen
        self._alive &= ~terminated
        truncated = np.full(self.num_envs, self._t >= self.max_episode_steps) & ~terminated
        return obs, rewards, terminated, truncated, info

    def _simulate(self, stepped: np.ndarray, before: np.ndarray, controls: np.ndarray, nstep: int) -> None:
        """`nstep` simulator steps of the copies in `stepped` from their states in `before` under `controls` (all
        copies'), by rollout; writes their new states."""
        n = stepped.size
        if nstep < 1:
            return
        everyone = n == self.num_envs  # the common case: no copy frozen, nothing to gather
        initial = before if everyone else before[stepped]
        controls = controls if everyone else controls[stepped]
        control = np.repeat(controls[:, None, :], nstep, axis=1)
        out = np.empty((n, nstep, self._state.shape[1]))
        models = self._models if everyone else [self._models[i] for i in stepped]
        try:
            self._rollout.rollout(models, self._thread_datas, initial, control, nstep=nstep, state=out,
                                  skip_checks=True)
        except Exception as exc:  # surface a failing simulator in the caller, never a silent hang
            raise RuntimeError(f"{type(self).__name__}: the simulator failed while stepping {n} copies: "
                               f"{exc!r}") from exc
        self._finish_stopped_copies(models, initial, controls, out)
        self._state[stepped] = out[:, -1]

    def _finish_stopped_copies(self, models, initial, controls, out) -> None:
        """Re-step with plain mj_step any copy whose rollout stopped early on a MuJoCo warning (a diverging state,
        which MuJoCo resets): rollout then repeats the last state where a single env goes on stepping."""
        timestep, nstep = self.model.opt.timestep, out.shape[1]
        expected = initial[:, 0] + nstep * timestep
        d = self._scratch
        for j in np.flatnonzero(np.abs(out[:, -1, 0] - expected) > 0.5 * timestep):
            m = models[j]
            mujoco.mj_resetData(m, d)
            mujoco.mj_setState(m, d, initial[j], _STATE)
            d.ctrl[:] = controls[j]
            for k in range(nstep):
                mujoco.mj_step(m, d)
                mujoco.mj_getState(m, d, out[j, k], _STATE)

    def _per_copy(self, copies: np.ndarray, states: np.ndarray, last_step: bool = False) -> None:
        """For each copy in `copies`, from the matching row of `states` with its control held: with `last_step`,
        its last simulator step (mj_step, then mj_rnePostConstraint, as gymnasium's MujocoEnv) and its new state
        written back; else `_derive` (a forward pass). Then `_read`. In chunks over the threads (the GIL released)."""
        # State and control of each copy in one row, set with one call (the control sits right after the physics
        # state in MuJoCo's state layout when the model has no plugin state; otherwise two calls).
        joint = self._state_and_ctrl_spec is not None
        rows = np.concatenate([states, self._ctrl[copies]], axis=1) if joint else states
        models = self._models

        def run(chunk, d):
            ctrl = d.ctrl
            for j in chunk:
                i = copies[j]
                m = models[i]
                if joint:
                    mujoco.mj_setState(m, d, rows[j], self._state_and_ctrl_spec)
                else:
                    mujoco.mj_setState(m, d, rows[j], _STATE)
                    ctrl[:] = self._ctrl[i]
                if last_step:
                    mujoco.mj_step(m, d)
                    mujoco.mj_rnePostConstraint(m, d)
                    mujoco.mj_getState(m, d, self._state[i], _STATE)
                else:
                    self._derive(m, d)
                self._read(d, i)

        chunks = np.array_split(np.arange(len(copies)), len(self._per_copy_datas))
        if self._pool is None:
            run(chunks[0], self._per_copy_datas[0])
        else:
            list(self._pool.map(run, chunks, self._per_copy_datas))

    def close_extras(self, **kwargs) -> None:
        if self._rollout is not None:
            self._rollout.close()
            self._rollout = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
