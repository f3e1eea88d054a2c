"""Physics on the accelerator: the cheetah families on MJX (MuJoCo in JAX, Google DeepMind), nav2d in torch.

The batch's state never leaves the device: `reset` and `step` take and give torch tensors on the device (JAX and
torch share the memory through DLPack), and one env step of every copy is one compiled JAX call (frame-skip
`mjx.step`s under `vmap`, the reward computed from the simulator state in the same call). The step is compiled once
per model, frame skip and batch size (JAX's persistent cache keeps it across runs where `jax_compilation_cache_dir`
is set). Initial states are drawn on the host with the single envs' draws (copy i seeded with seed + i), so a copy
starts where the C simulator's would; MJX computes in float32, so trajectories then agree with the C simulator's to
about 1e-5 over a short horizon (tested) and drift apart over long ones, as any round-off does in chaotic dynamics.

Requires the `gpu` extra (`pip install -e ".[gpu]"`: mujoco-mjx and jax). MJX's "warp" implementation (MuJoCo Warp)
is chosen with `impl="warp"` where warp-lang is installed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os

import numpy as np
import torch
from gymnasium.spaces import Box
from gymnasium.utils import seeding

from metarl.envs.half_cheetah import CTRL_COST_WEIGHT, HORIZON, HalfCheetahDirEnv, HalfCheetahVelEnv
from metarl.envs.navigation import HORIZON as NAV_HORIZON
from metarl.envs.navigation import GOAL_TOLERANCE, MAX_ACTION, Navigation2DEnv, check_goal_task
from metarl.envs.vector import TaskSlots, copy_seeds

IMPLS = ("jax", "warp")


# JAX's persistent compilation cache: a step compiled once is loaded by later runs (METARL_JAX_CACHE moves it;
# an empty value turns it off)
CACHE_DIR = os.environ.get("METARL_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "metarl", "jax"))


def _jax(impl: str = "jax"):
    """jax, jax.numpy and mujoco.mjx, or one ImportError line naming the fix."""
    if impl not in IMPLS:
        raise ValueError(f"physics_impl {impl!r} is not one of {', '.join(IMPLS)}")
    try:
        import jax
        import jax.numpy as jnp
        with contextlib.redirect_stdout(io.StringIO()):  # mjx prints a line when the optional warp is absent
            from mujoco import mjx
    except ImportError as exc:
        raise ImportError(f"physics: mjx needs the gpu extra ({exc.name or exc} is missing): "
                          "pip install -e \".[gpu]\" (mujoco-mjx and jax)") from None
    if impl == "warp" and importlib.util.find_spec("warp") is None:
        raise ImportError("physics_impl: warp needs MuJoCo Warp: pip install warp-lang mujoco-warp "
                          "(or set physics_impl: jax)")
    if CACHE_DIR and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return jax, jnp, mjx


def _to_torch(array) -> torch.Tensor:
    return torch.from_dlpack(array)


class MJXCheetahBatch(TaskSlots):
    """`num_envs` HalfCheetah copies of a cheetah family on MJX, on JAX's default device (`num_threads` is taken for
    the batches' common interface; XLA threads its own work).

    The same model, reset draws, action clipping, forward reward (displacement over the env step) and control cost
    as HalfCheetahBatch; tasks set with set_attr("task", ...). `step(actions)` takes a torch tensor (copies, 6) on
    any device and returns torch tensors on the batch's device: observations (copies, 17), rewards (copies,),
    terminated (copies,) (always False), truncated (copies,).
    """

    can_terminate = False  # the cheetahs run to the horizon

    def __init__(self, family: type, num_envs: int, *, max_episode_steps: int | None = HORIZON, frame_skip: int = 5,
                 num_threads: int = 1, impl: str = "jax", reset_noise_scale: float = 0.1,
                 ctrl_cost_weight: float = CTRL_COST_WEIGHT, forward_velocity: str = "displacement"):
        if forward_velocity != "displacement":
            raise ValueError(f"physics: mjx computes the cheetahs' displacement velocity only, not "
                             f"forward_velocity={forward_velocity!r}")
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1 (simulator steps per env step), got {frame_skip!r}")
        jax, jnp, mjx = _jax(impl)
        import gymnasium.envs.mujoco as gymnasium_mujoco
        import mujoco

        from metarl.envs.half_cheetah import _model_load_warnings

        self.family, self.num_envs, self.max_episode_steps = family, int(num_envs), max_episode_steps or HORIZON
        self.frame_skip = int(frame_skip)
        path = os.path.join(os.path.dirname(gymnasium_mujoco.__file__), "assets", "half_cheetah.xml")
        with _model_load_warnings():
            self.model = mujoco.MjModel.from_xml_path(path)
        self.dt = self.model.opt.timestep * self.frame_skip
        self._noise, self._ctrl_weight = reset_noise_scale, ctrl_cost_weight
        data = mujoco.MjData(self.model)
        self._init_qpos, self._init_qvel = data.qpos.copy(), data.qvel.copy()
        self._mx = mjx.put_model(self.model, impl=impl)
        self._jax, self._jnp, self._mjx = jax, jnp, mjx
        self._rngs = [None] * self.num_envs
        self._tasks = [family._default_task] * self.num_envs
        self._task_values = None
        self._tasks_changed()
        self._t = 0
        self._data = None
        low, high = self.model.actuator_ctrlrange.T
        self._low, self._high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
        self.obs_dim, self.act_dim = self.model.nq - 1 + self.model.nv, self.model.nu
        self.single_action_space = Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.single_observation_space = Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        # the physics compiled once per frame skip and batch size, the reward once per family: shared by every batch
        self._physics = _compiled_physics(self.frame_skip)
        self._reward = _compiled_reward(family, float(self.dt), float(self._ctrl_weight))
        self._start = _compiled_start()

    # -- tasks, as the CPU batches ------------------------------------------------------------------------------
    def sample_tasks(self, rng: np.random.Generator, n: int) -> list:
        return self.family._sample(rng, n)

    def _check_task(self, task):
        return self.family._check(task)

    def _tasks_changed(self) -> None:
        values = np.array([self.family._value(t) for t in self._tasks], dtype=np.float32)
        self._task_values = self._jnp.asarray(values)

    # -- the VectorEnv-like surface the sampler uses -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The torch device of the batch's tensors (JAX's default device's)."""
        return torch.device("cpu" if self._jax.default_backend() == "cpu" else "cuda")

    def reset(self, *, seed=None, options: dict | None = None):
        if options and "task" in options:
            self.set_attr("task", options["task"])
        seeds = copy_seeds(seed, self.num_envs)
        qpos = np.empty((self.num_envs, self.model.nq))
        qvel = np.empty((self.num_envs, self.model.nv))
        for i in range(self.num_envs):
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
            rng = self._rngs[i]  # the same draws, in the same order, as HalfCheetah-v5's reset_model
            qpos[i] = self._init_qpos + rng.uniform(-self._noise, self._noise, size=self.model.nq)
            qvel[i] = self._init_qvel + self._noise * rng.standard_normal(self.model.nv)
        jnp = self._jnp
        self._data = self._start(self._mx, jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32))
        self._t = 0
        obs = jnp.concatenate([self._data.qpos[:, 1:], self._data.qvel], axis=1)
        return _to_torch(obs), {}

    def step(self, actions: torch.Tensor):
        if tuple(actions.shape) != (self.num_envs, self.act_dim):
            raise ValueError(f"actions must have shape {(self.num_envs, self.act_dim)}, got {tuple(actions.shape)}")
        actions = self._jax.dlpack.from_dlpack(actions.detach().to(self.device, torch.float32).contiguous())
        x_before = self._data.qpos[:, 0]
        self._data, clipped = self._physics(self._mx, self._data, actions, self._low, self._high)
        obs, rewards = self._reward(self._data.qpos, self._data.qvel, x_before, clipped, self._task_values)
        self._t += 1
        done = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = torch.full_like(done, self._t >= self.max_episode_steps)
        return _to_torch(obs), _to_torch(rewards), done, truncated, {}

    @property
    def qpos(self) -> np.ndarray:
        """Joint positions of every copy, copied to the host (for tests and inspection, never in sampling)."""
        return np.asarray(self._data.qpos)

    @property
    def qvel(self) -> np.ndarray:
        return np.asarray(self._data.qvel)

    def close(self) -> None:
        self._data = None


@functools.cache
def _compiled_physics(frame_skip: int):
    """`frame_skip` mjx.steps of every copy (vmap) with its clipped controls, as one jitted JAX function of (model,
    data, actions, bounds) -> (data, clipped actions); shared by the cheetah families (their rewards differ only
    in _compiled_reward's cheap function, compiled apart)."""
    jax, jnp, mjx = _jax()

    def physics(mx, data, actions, low, high):
        actions = jnp.clip(actions, low, high)

        def substep(d, _):
            return jax.vmap(lambda one, ctrl: mjx.step(mx, one.replace(ctrl=ctrl)))(d, actions), None

        data, _ = jax.lax.scan(substep, data, None, length=frame_skip)
        return data, actions

    return jax.jit(physics)


@functools.cache
def _compiled_reward(family: type, dt: float, ctrl_weight: float):
    """HalfCheetahBatch's observation and reward from the simulator state after the step (displacement over the
    env step, the family's forward term, the control cost), jitted."""
    jax, jnp, _ = _jax()

    def reward(qpos, qvel, x_before, actions, task_values):
        forward = family._forward(task_values, (qpos[:, 0] - x_before) / dt)
        ctrl = -ctrl_weight * jnp.sum(jnp.square(actions), axis=1)
        return jnp.concatenate([qpos[:, 1:], qvel], axis=1), forward + ctrl

    return jax.jit(reward)


@functools.cache
def _compiled_start():
    """The batch's MJX data at given positions and velocities (vmapped mjx.make_data), jitted."""
    jax, _, mjx = _jax()
    return jax.jit(jax.vmap(lambda mx, qpos, qvel: mjx.make_data(mx).replace(qpos=qpos, qvel=qvel),
                            in_axes=(None, 0, 0)))


class Navigation2DTorchBatch(TaskSlots):
    """nav2d on a torch device: no simulator, the step formula of `nav_step` in torch (float32). The same
    reset (every copy at the origin), clipping, reward and termination as Navigation2DBatch; a copy that reached
    its goal stays where it is with reward 0, as there."""

    def __init__(self, num_envs: int, *, max_episode_steps: int | None = NAV_HORIZON,
                 device: str | torch.device = "cpu",
                 num_threads: int = 1):
        self.family = Navigation2DEnv
        self.num_envs, self.max_episode_steps = int(num_envs), max_episode_steps or NAV_HORIZON
        self._device = torch.device(device)
        self.obs_dim = self.act_dim = 2
        self.single_action_space = Box(-MAX_ACTION, MAX_ACTION, (2,), np.float32)
        self.single_observation_space = Box(-np.inf, np.inf, (2,), np.float32)
        self._tasks = [Navigation2DEnv().task] * self.num_envs
        self._tasks_changed()
        self._state = torch.zeros(self.num_envs, 2, device=self._device)
        self._done = torch.zeros(self.num_envs, dtype=torch.bool, device=self._device)
        self._t = 0

    device = property(lambda self: self._device)

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list:
        return Navigation2DEnv().sample_tasks(rng, n)

    def _check_task(self, task):
        return check_goal_task(task)

    def _tasks_changed(self) -> None:
        self._goals = torch.tensor([t.goal for t in self._tasks], dtype=torch.float32, device=self._device)

    def reset(self, *, seed=None, options: dict | None = None):
        if options and "task" in options:
            self.set_attr("task", options["task"])
        self._state = torch.zeros(self.num_envs, 2, device=self._device)
        self._done = torch.zeros(self.num_envs, dtype=torch.bool, device=self._device)
        self._t = 0
        return self._state.clone(), {}

    def step(self, actions: torch.Tensor):
        actions = actions.to(self._device, torch.float32).clamp(-MAX_ACTION, MAX_ACTION)
        moved = self._state + actions
        delta = moved - self._goals
        reward = -torch.linalg.vector_norm(delta, dim=1)
        reached = torch.all(delta.abs() < GOAL_TOLERANCE, dim=1)
        running = ~self._done
        self._state = torch.where(running[:, None], moved, self._state)
        reward = torch.where(running, reward, torch.zeros_like(reward))
        self._done = self._done | reached
        self._t += 1
        truncated = torch.full_like(self._done, self._t >= self.max_episode_steps) & ~self._done
        return self._state.clone(), reward, self._done.clone(), truncated, {}

    def close(self) -> None:
        pass


FAMILIES = ("cheetah-dir", "cheetah-vel", "nav2d")


def problem(name: str, impl: str = "jax", forward_velocity: str | None = None, device: str = "cpu") -> str | None:
    """Why task family `name` cannot run on `physics: mjx` with implementation `impl` and the policy on `device`
    (one line naming the fix), or None; checked before a run writes anything."""
    from metarl.envs import get_family

    family = get_family(name)
    if family.name not in FAMILIES:
        return (f"physics: mjx does not run task family {family.name!r}; it runs {', '.join(FAMILIES)} "
                "(set physics: mujoco for the others)")
    if forward_velocity not in (None, "displacement"):
        return (f"physics: mjx computes the cheetahs' displacement velocity only, not "
                f"forward_velocity={forward_velocity!r} (set forward_velocity: displacement or physics: mujoco)")
    if family.name == "nav2d":  # torch alone, on the policy's device
        return None
    try:
        jax, _, _ = _jax(impl)
    except (ImportError, ValueError) as exc:
        return str(exc)
    backend = jax.default_backend()
    if (backend == "cpu") != (device == "cpu"):
        return (f"physics: mjx runs on JAX's {backend} backend but device is {device}: install JAX for that device "
                f"(for CUDA: pip install \"jax[cuda12]\") or set device: {'cpu' if backend == 'cpu' else 'cuda'}")
    return None


def make_device_batched(name: str, num_envs: int, *, impl: str = "jax", **kwargs):
    """The device-resident batched form of a built-in family on `physics: mjx` (nav2d on torch's `device`, the
    cheetahs on JAX's default device); one ValueError line for a family that has none."""
    from metarl.envs import get_family

    family = get_family(name)
    device = kwargs.pop("device", "cpu")  # nav2d's; the cheetahs run on JAX's default device
    if family.env_cls in (HalfCheetahDirEnv, HalfCheetahVelEnv):
        return MJXCheetahBatch(family.env_cls, num_envs, impl=impl, **kwargs)
    if family.env_cls is Navigation2DEnv:
        kwargs.pop("frame_skip", None)
        return Navigation2DTorchBatch(num_envs, device=device, **kwargs)
    raise ValueError(f"physics: mjx does not run task family {family.name!r}; it runs cheetah-dir, cheetah-vel and "
                     "nav2d (set physics: mujoco for the others)")
