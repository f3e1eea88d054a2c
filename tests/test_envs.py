"""Tests of metarl.envs: the built-in task families, their registry, the task contract and the plug-in path."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.spaces import Box
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from gymnasium.vector import SyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import metarl.envs as envs
from metarl.envs import (CheetahDirTask, CheetahVelTask, ContractError, HalfCheetahDirEnv, HalfCheetahVelEnv,
                         Nav2DTask, Navigation2DEnv)

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = {"cheetah-dir": ("metarl/HalfCheetahDir-v0", HalfCheetahDirEnv, 200),
            "cheetah-vel": ("metarl/HalfCheetahVel-v0", HalfCheetahVelEnv, 200),
            "nav2d": ("metarl/Navigation2D-v0", Navigation2DEnv, 100)}
# Two valid tasks per family.
TASKS = {"cheetah-dir": (CheetahDirTask(1.0), CheetahDirTask(-1.0)),
         "cheetah-vel": (CheetahVelTask(0.5), CheetahVelTask(1.75)),
         "nav2d": (Nav2DTask((0.1, -0.2)), Nav2DTask((-0.3, 0.4)))}
CTRL = 0.05


@pytest.fixture(autouse=True)
def restore_registries():
    """Undo every family (metarl) and env id (gymnasium) a test registers, so tests don't leak into each other."""
    families_before = dict(envs._REGISTRY)
    ids_before = set(gymnasium.registry)
    yield
    envs._REGISTRY.clear()
    envs._REGISTRY.update(families_before)
    for gym_id in set(gymnasium.registry) - ids_before:
        del gymnasium.registry[gym_id]


# ---------------------------------------------------------------------------------------------- env checkers

@pytest.mark.parametrize("name", list(envs.families()))
def test_gymnasium_and_sb3_env_checkers_pass(name):
    env = envs.make(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Spurious: observations are joint positions/velocities or a position on the unbounded plane, so
        # infinite Box bounds are the truth, not a mistake.
        warnings.filterwarnings("ignore", message=r".*Box observation space (minimum|maximum) value is -?infinity")
        if name == "nav2d":
            # Spurious: nav2d's actions are displacements in [-0.1, 0.1]^2 by definition (MAML paper, sec. 5.3).
            warnings.filterwarnings("ignore", message=r".*symmetric and normalized Box action space")
        # The render check opens a GLFW window, which aborts the process on a machine without a display; the
        # families do not touch rendering (it is gymnasium's MujocoEnv code).
        gymnasium_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=True)
    env.close()


# ---------------------------------------------------------------------------------------------- rewards

def _random_actions(rng, n, dim=6):
    """Actions in [-1, 1]; every other one float32, as a torch policy would give."""
    return [rng.uniform(-1.0, 1.0, dim).astype(np.float32 if k % 2 else np.float64) for k in range(n)]


@pytest.mark.parametrize("direction", [-1.0, 1.0])
def test_cheetah_dir_reward_is_direction_times_velocity_minus_ctrl(direction):
    env = envs.make("cheetah-dir")
    task = CheetahDirTask(direction)
    env.reset(seed=3, options={"task": task})
    data, dt = env.unwrapped.data, env.unwrapped.dt
    assert dt == 0.05
    moved = 0.0
    for action in _random_actions(np.random.default_rng(0), 12):
        x_before = float(data.qpos[0])
        _, reward, terminated, truncated, info = env.step(action)
        x_after = float(data.qpos[0])
        a = action.astype(np.float64)
        expected = direction * (x_after - x_before) / dt - CTRL * float(np.sum(a * a))
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert info["reward_forward"] + info["reward_ctrl"] == pytest.approx(reward, rel=1e-12, abs=1e-12)
        assert info["task"] == task
        assert not terminated and not truncated
        moved = max(moved, abs(x_after - x_before))
    assert moved > 1e-3  # the forward term was exercised, not just the control cost


@pytest.mark.parametrize("goal", [0.0, 0.8, 2.0])
def test_cheetah_vel_reward_is_minus_velocity_error_minus_ctrl(goal):
    env = envs.make("cheetah-vel")
    task = CheetahVelTask(goal)
    env.reset(seed=4, options={"task": task})
    data, dt = env.unwrapped.data, env.unwrapped.dt
    assert dt == 0.05
    for action in _random_actions(np.random.default_rng(1), 12):
        x_before = float(data.qpos[0])
        _, reward, _, _, info = env.step(action)
        v_x = (float(data.qpos[0]) - x_before) / dt
        a = action.astype(np.float64)
        assert reward == pytest.approx(-abs(v_x - goal) - CTRL * float(np.sum(a * a)), rel=1e-12, abs=1e-12)
        assert info["reward_forward"] == pytest.approx(-abs(v_x - goal), rel=1e-12, abs=1e-12)
        assert info["reward_forward"] + info["reward_ctrl"] == pytest.approx(reward, rel=1e-12, abs=1e-12)
        assert info["task"] == task


def body_momentum_velocity(model, qpos, qvel) -> float:
    """rllab's body_comvels[torso][0], computed its way: sum over bodies of mass * (body COM velocity from
    mj_objectVelocity, world frame) over the total mass, at the given state."""
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = qpos, qvel
    mujoco.mj_forward(model, data)
    momentum, vel = np.zeros(3), np.zeros(6)
    for body in range(1, model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body, vel, 0)
        momentum += model.body_mass[body] * vel[3:]
    return float(momentum[0] / model.body_mass[1:].sum())


@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_cheetah_com_forward_velocity_is_the_centre_of_mass_velocity_after_the_step(name):
    """forward_velocity="com": the forward term reads the x velocity of the cheetah's centre of mass at the state
    after the step (the MAML code's get_body_comvel("torso")), not the torso's displacement."""
    env = envs.make(name, frame_skip=1, forward_velocity="com")
    task = TASKS[name][1]
    env.reset(seed=5, options={"task": task})
    model, data = env.unwrapped.model, env.unwrapped.data
    differs = 0.0
    for action in _random_actions(np.random.default_rng(2), 15):
        x_before = float(data.qpos[0])
        _, reward, _, _, info = env.step(action)
        v_com = body_momentum_velocity(model, data.qpos.copy(), data.qvel.copy())
        goal = task.direction if name == "cheetah-dir" else task.velocity
        forward = goal * v_com if name == "cheetah-dir" else -abs(v_com - goal)
        a = action.astype(np.float64)
        assert info["reward_forward"] == pytest.approx(forward, rel=1e-10, abs=1e-10)
        assert reward == pytest.approx(forward - CTRL * float(np.sum(a * a)), rel=1e-10, abs=1e-10)
        differs = max(differs, abs(v_com - (float(data.qpos[0]) - x_before) / env.unwrapped.dt))
    assert differs > 1e-2  # not the displacement under another name
    with pytest.raises(ValueError, match="forward_velocity 'fast' is not one of displacement, com"):
        envs.make(name, forward_velocity="fast")


@pytest.mark.parametrize("name", ["cheetah-dir", "cheetah-vel"])
def test_cheetah_charges_the_control_cost_on_the_action_clipped_to_the_action_space(name):
    # As rllab and the MAML code: 3.0 costs what the bound 1.0 costs, and moves the cheetah as 1.0 does.
    outside, bound = envs.make(name), envs.make(name)
    low, high = outside.action_space.low, outside.action_space.high
    assert np.all(low == -1.0) and np.all(high == 1.0) and low.shape == (6,)
    for env in (outside, bound):
        env.reset(seed=2, options={"task": TASKS[name][0]})
    mixed = np.array([3.0, -3.0, 0.5, -0.25, 7.0, -1.0])
    plan = [(np.full(6, 3.0), np.full(6, 1.0)), (np.full(6, -3.0, dtype=np.float32), np.full(6, -1.0)),
            (mixed, np.clip(mixed, -1.0, 1.0))]
    for action, clipped in plan:
        obs, reward, _, _, info = outside.step(action)
        obs_bound, reward_bound, _, _, info_bound = bound.step(clipped)
        np.testing.assert_array_equal(obs, obs_bound)
        assert reward == reward_bound
        assert info["reward_ctrl"] == info_bound["reward_ctrl"] == pytest.approx(-CTRL * float(np.sum(clipped ** 2)),
                                                                                  rel=1e-12)
    assert -CTRL * 6 == pytest.approx(outside.step(np.full(6, 3.0))[4]["reward_ctrl"], rel=1e-12)
    with pytest.raises(ValueError):  # a wrongly shaped action is still refused, not broadcast by the clip
        outside.step(np.array(3.0))


def test_nav2d_starts_at_origin_and_rewards_minus_distance_after_clipped_move():
    env = envs.make("nav2d")
    goal = np.array([0.3, -0.2])
    task = Nav2DTask(tuple(goal))
    obs, info = env.reset(seed=0, options={"task": task})
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    assert info["task"] == task
    state = np.zeros(2)
    rng = np.random.default_rng(2)
    for _ in range(15):
        action = rng.uniform(-0.3, 0.3, 2)  # often outside [-0.1, 0.1]: exercises the clip
        state = state + np.clip(action, -0.1, 0.1)
        obs, reward, terminated, _, info = env.step(action)
        np.testing.assert_allclose(obs, state, rtol=0, atol=1e-6)  # observations are float32
        assert reward == pytest.approx(-np.hypot(*(state - goal)), rel=1e-12)
        assert info["reward_dist"] == reward
        assert info["task"] == task
        assert terminated == bool(np.all(np.abs(state - goal) < 0.01))
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0.0, 0.0])


def test_nav2d_terminates_exactly_when_both_coordinates_are_within_tolerance():
    env = envs.make("nav2d")
    env.reset(options={"task": Nav2DTask((0.25, -0.15))})
    # (action, state after it, terminated): x gets within 0.01 before y does; the first action is clipped.
    plan = [((0.5, -0.5), (0.1, -0.1), False),
            ((0.1, -0.039), (0.2, -0.139), False),     # dy = 0.011
            ((0.041, 0.0), (0.241, -0.139), False),    # dx = -0.009 but dy = 0.011
            ((0.0, -0.002), (0.241, -0.141), True)]    # dx = -0.009, dy = 0.009
    for action, state, terminated in plan:
        obs, reward, done, truncated, _ = env.step(np.array(action))
        np.testing.assert_allclose(obs, state, atol=1e-6)
        assert reward == pytest.approx(-np.hypot(state[0] - 0.25, state[1] + 0.15), rel=1e-6)
        assert done is terminated and truncated is False


# ---------------------------------------------------------------------------------------------- task sampling

@pytest.mark.parametrize("name", list(BUILT_IN))
def test_sample_tasks_depend_only_on_the_rng(name):
    env = envs.make(name).unwrapped
    np.random.seed(1)
    first = env.sample_tasks(np.random.default_rng(7), 20)
    np.random.seed(2)
    np.random.random(5)
    again = env.sample_tasks(np.random.default_rng(7), 20)
    other = env.sample_tasks(np.random.default_rng(8), 20)
    assert len(first) == 20 and first == again
    assert other != first
    assert all(type(task) is type(TASKS[name][0]) for task in first)


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_tasks_are_frozen_dataclasses(name):
    task = envs.make(name).unwrapped.sample_tasks(np.random.default_rng(0), 1)[0]
    assert dataclasses.is_dataclass(task)
    field = dataclasses.fields(task)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(task, field, getattr(task, field))


def test_directions_are_plus_or_minus_one_with_probability_half():
    directions = np.array([t.direction for t in HalfCheetahDirEnv().sample_tasks(np.random.default_rng(0), 2000)])
    assert set(directions) == {-1.0, 1.0}
    assert abs(np.mean(directions == 1.0) - 0.5) < 0.05  # sd of the mean is 0.011


def test_goal_velocities_cover_zero_to_two():
    velocities = np.array([t.velocity for t in HalfCheetahVelEnv().sample_tasks(np.random.default_rng(0), 2000)])
    assert velocities.min() >= 0.0 and velocities.max() <= 2.0
    assert velocities.min() < 0.05 and velocities.max() > 1.95


def test_nav2d_goals_cover_the_square_in_all_quadrants():
    goals = np.array([t.goal for t in Navigation2DEnv().sample_tasks(np.random.default_rng(0), 2000)])
    assert goals.shape == (2000, 2)
    assert np.all(np.abs(goals) <= 0.5)
    assert goals.min() < -0.45 and goals.max() > 0.45
    quadrants = {(bool(x > 0), bool(y > 0)) for x, y in goals}
    assert quadrants == {(True, True), (True, False), (False, True), (False, False)}


# ---------------------------------------------------------------------------------------------- task contract

@pytest.mark.parametrize("name", list(BUILT_IN))
def test_reset_options_set_the_task_and_plain_reset_keeps_it(name):
    env = envs.make(name)
    first, second = TASKS[name]
    _, info = env.reset(seed=0, options={"task": first})
    assert env.unwrapped.task == first and info["task"] == first
    env.reset()
    assert env.unwrapped.task == first
    env.reset(seed=5)
    assert env.unwrapped.task == first
    env.reset(options={"task": second})
    assert env.unwrapped.task == second
    assert env.step(env.action_space.sample())[4]["task"] == second


BAD_TASKS = [  # (family, bad task, text the message must contain besides the family name)
    ("cheetah-dir", CheetahDirTask(0.5), ["0.5", "-1", "+1"]),
    ("cheetah-vel", CheetahVelTask(2.5), ["2.5", "[0, 2]"]),
    ("cheetah-vel", CheetahVelTask(-0.1), ["-0.1", "[0, 2]"]),
    ("nav2d", Nav2DTask((0.7, 0.0)), ["0.7", "[-0.5, 0.5]"]),
    ("cheetah-dir", CheetahVelTask(1.0), ["CheetahVelTask(velocity=1.0)", "CheetahDirTask"]),
    ("cheetah-vel", 1.0, ["1.0", "CheetahVelTask"]),
    ("nav2d", (0.1, 0.1), ["(0.1, 0.1)", "Nav2DTask"]),
]


@pytest.mark.parametrize("name, task, parts", BAD_TASKS, ids=[f"{n}-{t!r}" for n, t, _ in BAD_TASKS])
def test_bad_task_raises_value_error_naming_family_value_and_range(name, task, parts):
    env = envs.make(name)
    good = TASKS[name][1]
    env.reset(options={"task": good})
    with pytest.raises(ValueError) as caught:
        env.reset(options={"task": task})
    for text in [name, *parts]:
        assert text in str(caught.value)
    assert env.unwrapped.task == good  # a rejected task changes nothing
    with pytest.raises(ValueError, match=name):
        env.unwrapped.task = task


@pytest.mark.parametrize("env_cls", [HalfCheetahDirEnv, HalfCheetahVelEnv, Navigation2DEnv])
def test_built_in_families_pass_the_contract_checker(env_cls):
    envs.check_family(env_cls)


# ---------------------------------------------------------------------------------------------- registration

@pytest.mark.parametrize("name", list(BUILT_IN))
def test_gymnasium_ids_and_short_names_make_the_family_with_its_time_limit(name):
    gym_id, env_cls, horizon = BUILT_IN[name]
    for env in (gymnasium.make(gym_id), gymnasium.make(f"metarl:{gym_id}"), envs.make(name), envs.make(gym_id)):
        assert type(env.unwrapped) is env_cls
        assert env.spec.max_episode_steps == horizon
    assert envs.get_family(name).horizon == env_cls.horizon == horizon


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_made_env_truncates_at_the_horizon(name):
    env = envs.make(name)
    env.reset(seed=0, options={"task": TASKS[name][0]})
    zero = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)  # nav2d stays at the origin
    truncations = [env.step(zero)[3] for _ in range(BUILT_IN[name][2])]
    assert truncations == [False] * (len(truncations) - 1) + [True]


def test_unknown_family_raises_value_error_listing_known_ones():
    with pytest.raises(ValueError) as caught:
        envs.make("cheetah-backflip")
    for name in BUILT_IN:
        assert name in str(caught.value)
    assert "cheetah-backflip" in str(caught.value)


def test_families_describes_each_built_in_in_one_line():
    described = envs.families()
    assert set(BUILT_IN) <= set(described)
    for name in BUILT_IN:
        assert isinstance(described[name], str) and described[name].strip() and "\n" not in described[name]


# ---------------------------------------------------------------------------------------------- plug-in path

@pytest.fixture
def goal_cheetah(monkeypatch):
    """The worked example examples/goal_cheetah.py, imported as a user would (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    monkeypatch.delitem(sys.modules, "goal_cheetah", raising=False)
    return importlib.import_module("goal_cheetah")


def test_example_family_registers_with_one_call_and_runs(goal_cheetah):
    family = goal_cheetah.register()
    assert "goal-cheetah" in envs.families() and family.horizon == 200
    env = envs.make("goal-cheetah")
    assert env.spec.max_episode_steps == 200
    task = goal_cheetah.GoalTask(-1.5)
    env.reset(seed=0, options={"task": task})
    data = env.unwrapped.data
    for action in _random_actions(np.random.default_rng(0), 5):
        _, reward, _, _, info = env.step(action)
        a = action.astype(np.float64)
        assert reward == pytest.approx(-abs(float(data.qpos[0]) + 1.5) - CTRL * float(np.sum(a * a)), rel=1e-12)
        assert info["task"] == task
    with pytest.raises(ValueError, match=r"goal-cheetah.*7\.0.*\[-5, 5\]"):
        env.reset(options={"task": goal_cheetah.GoalTask(7.0)})


def test_example_family_without_batched_form_falls_back_to_sync_vector_env(goal_cheetah):
    goal_cheetah.register()
    vec = envs.make_batched("goal-cheetah", 3)
    assert isinstance(vec, SyncVectorEnv)
    tasks = [goal_cheetah.GoalTask(g) for g in (-4.0, 0.5, 3.0)]
    vec.set_attr("task", tasks)
    assert list(vec.get_attr("task")) == tasks
    vec.reset(seed=0)
    for _ in range(4):
        _, rewards, terminated, truncated, info = vec.step(vec.action_space.sample())
        positions = np.array([e.unwrapped.data.qpos[0] for e in vec.envs])
        goals = np.array([t.goal for t in tasks])
        np.testing.assert_allclose(rewards - info["reward_ctrl"], -np.abs(positions - goals), rtol=1e-12)
        assert list(info["task"]) == tasks and not terminated.any() and not truncated.any()


def test_example_family_resolves_from_module_and_class(goal_cheetah):
    family = envs.get_family("goal_cheetah:GoalCheetahEnv")
    assert family.env_cls is goal_cheetah.GoalCheetahEnv
    assert "goal_cheetah:GoalCheetahEnv" in envs.families()
    env = envs.make("goal_cheetah:GoalCheetahEnv")
    env.reset(seed=1, options={"task": goal_cheetah.GoalTask(2.0)})
    assert env.step(env.action_space.sample())[4]["task"] == goal_cheetah.GoalTask(2.0)


def test_module_class_naming_an_unknown_module_or_class_raises_value_error():
    with pytest.raises(ValueError, match="no_such_module"):
        envs.get_family("no_such_module:Env")
    with pytest.raises(ValueError, match="NoSuchEnv"):
        envs.get_family("metarl.envs.navigation:NoSuchEnv")


def test_docs_show_the_example_verbatim():
    code = (REPO / "examples" / "goal_cheetah.py").read_text()
    page = (REPO / "docs" / "task-families.md").read_text()
    assert f"```python\n{code.strip()}\n```" in page, "docs/task-families.md's example differs from the file"


# ---------------------------------------------------------------------------------------------- broken families

@dataclasses.dataclass(frozen=True)
class _Goal:
    value: float


class _TinyBase(gymnasium.Env):
    """A scalar position moved by the action towards a goal in [-1, 1]; honours the contract, has no `horizon`."""

    observation_space = Box(-np.inf, np.inf, (1,), np.float64)
    action_space = Box(-1.0, 1.0, (1,), np.float64)

    def __init__(self):
        self._task, self._x = _Goal(0.0), 0.0

    def sample_tasks(self, rng, n):
        return [_Goal(float(v)) for v in rng.uniform(-1.0, 1.0, n)]

    @property
    def task(self):
        return self._task

    @task.setter
    def task(self, task):
        if not isinstance(task, _Goal) or not -1.0 <= task.value <= 1.0:
            raise ValueError(f"tiny: bad task {task!r}; allowed: _Goal(value) with value in [-1, 1]")
        self._task = task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.task = options["task"]
        self._x = 0.0
        return np.array([self._x]), {"task": self._task}

    def step(self, action):
        self._x += float(action[0])
        reward = -abs(self._x - self._task.value)
        return np.array([self._x]), reward, False, False, self._info(reward)

    def _info(self, reward):
        return {"task": self._task, "reward_dist": reward}


class _Tiny(_TinyBase):
    horizon = 10


class _NoHorizon(_TinyBase):
    pass


class _ZeroHorizon(_TinyBase):
    horizon = 0


class _BoolHorizon(_TinyBase):
    horizon = True


class _FloatHorizon(_TinyBase):
    horizon = 10.0


class _GlobalRng(_Tiny):
    def sample_tasks(self, rng, n):
        return [_Goal(float(v)) for v in np.random.uniform(-1.0, 1.0, n)]


@dataclasses.dataclass
class _MutableGoal:
    value: float


class _MutableTasks(_Tiny):
    def sample_tasks(self, rng, n):
        return [_MutableGoal(float(v)) for v in rng.uniform(-1.0, 1.0, n)]


class _ForgetsTask(_Tiny):
    def reset(self, *, seed=None, options=None):
        if not (options and "task" in options):
            self._task = _Goal(0.0)
        return super().reset(seed=seed, options=options)


class _NoTaskInInfo(_Tiny):
    def _info(self, reward):
        return {"reward_dist": reward}


class _TermsDontSum(_Tiny):
    def _info(self, reward):
        return {"task": self._task, "reward_dist": reward / 2}


class _AcceptsBadTask(_Tiny):
    @_Tiny.task.setter
    def task(self, task):
        self._task = task


def test_a_family_honouring_the_contract_passes():
    envs.check_family(_Tiny, "tiny")
    envs.register_family("tiny", _Tiny)
    assert "tiny" in envs.families()


@pytest.mark.parametrize("env_cls, part", [
    (_ZeroHorizon, "horizon"), (_BoolHorizon, "horizon"), (_FloatHorizon, "horizon"),
    (_GlobalRng, "sample_tasks"), (_MutableTasks, "sample_tasks"),
    (_ForgetsTask, "task"), (_NoTaskInInfo, "info"), (_TermsDontSum, "info"), (_AcceptsBadTask, "bad task"),
])
def test_a_family_breaking_the_contract_gets_an_error_naming_the_part(env_cls, part):
    with pytest.raises(ContractError, match=f"'broken'.*part '{part}'"):
        envs.check_family(env_cls, "broken")
    with pytest.raises(ContractError, match=f"part '{part}'"):
        envs.register_family("broken", env_cls)
    assert "broken" not in envs.families()


# ---------------------------------------------------------------------------------------------- horizon

def test_horizon_comes_from_the_config_then_the_class_attribute_then_the_gymnasium_time_limit():
    # the class attribute, unless the config gives one; it beats a gymnasium time limit
    gymnasium.register("metarltest/TinyLimited-v0", entry_point=_Tiny, max_episode_steps=50)
    tiny = envs.register_family("tiny", _Tiny, gym_id="metarltest/TinyLimited-v0")
    assert tiny.horizon == 10 and envs.resolve_horizon(tiny) == 10 and envs.resolve_horizon("tiny", 7) == 7
    # no attribute: the time limit of its gymnasium id, or of the one id registered for the class
    gymnasium.register("metarltest/NoHorizon-v0", entry_point=_NoHorizon, max_episode_steps=25)
    by_id = envs.register_family("by-id", _NoHorizon, gym_id="metarltest/NoHorizon-v0")
    by_class = envs.register_family("by-class", _NoHorizon)
    assert by_id.horizon == by_class.horizon == 25
    assert envs.resolve_horizon("by-class") == 25 and envs.resolve_horizon("by-class", 3) == 3
    assert envs.make("by-class").spec.max_episode_steps == 25
    with pytest.raises(ValueError, match="horizon must be an int >= 1.*got 0"):
        envs.resolve_horizon("tiny", 0)


def test_a_family_without_any_horizon_registers_and_needs_one_from_the_config():
    family = envs.register_family("no-horizon", _NoHorizon)  # the contract holds: the horizon can come later
    assert family.horizon is None
    with pytest.raises(ContractError) as caught:
        envs.resolve_horizon("no-horizon")
    message = str(caught.value)
    assert "\n" not in message
    for text in ("'no-horizon'", "--set horizon=N", "attribute `horizon`", "max_episode_steps"):
        assert text in message
    with pytest.raises(ContractError, match="'no-horizon' has no horizon"):
        envs.make_batched("no-horizon", 2)
    assert envs.resolve_horizon("no-horizon", 4) == 4
    vec = envs.make_batched("no-horizon", 2, max_episode_steps=4)
    vec.set_attr("task", [_Goal(0.5), _Goal(-0.5)])
    vec.reset(seed=0)
    truncations = [bool(vec.step(np.zeros((2, 1)))[3].all()) for _ in range(4)]
    assert truncations == [False, False, False, True]


# ---------------------------------------------------------------------------------------------- gymnasium ids

def test_a_task_family_registered_with_gymnasium_resolves_by_its_id():
    gymnasium.register("metarltest/Tiny-v0", entry_point=f"{__name__}:_NoHorizon", max_episode_steps=15)
    family = envs.get_family("metarltest/Tiny-v0")
    assert (family.name, family.gym_id, family.env_cls, family.horizon) == \
        ("metarltest/Tiny-v0", "metarltest/Tiny-v0", _NoHorizon, 15)
    assert "metarltest/Tiny-v0" in envs.families() and envs.get_family("metarltest/Tiny-v0") is family
    env = envs.make("metarltest/Tiny-v0")
    env.reset(seed=0, options={"task": _Goal(0.5)})
    assert env.step(np.array([0.25]))[4] == {"task": _Goal(0.5), "reward_dist": -0.25}
    assert envs.resolve_horizon("metarltest/Tiny-v0") == 15


def test_module_colon_gymnasium_id_imports_the_module_that_registers_it(tmp_path, monkeypatch):
    (tmp_path / "registers_tiny.py").write_text(
        "import gymnasium\n"
        f"gymnasium.register('metarltest/Imported-v0', entry_point='{__name__}:_NoHorizon', max_episode_steps=8)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "registers_tiny", raising=False)
    assert "metarltest/Imported-v0" not in gymnasium.registry
    family = envs.get_family("registers_tiny:metarltest/Imported-v0")
    assert family.name == "metarltest/Imported-v0" and family.env_cls is _NoHorizon and family.horizon == 8
    assert envs.get_family("registers_tiny:metarltest/Imported-v0") is family


def test_a_gymnasium_env_that_is_not_a_task_family_is_refused_in_one_line_naming_it():
    with pytest.raises(ContractError) as caught:
        envs.get_family("Pendulum-v1")
    message = str(caught.value)
    assert "\n" not in message
    for text in ("'Pendulum-v1'", "exists but is not a metarl task family", "sample_tasks(rng, n)",
                 "reset(options={'task': task})"):
        assert text in message
    assert "Pendulum-v1" not in envs.families()
    gymnasium.register("metarltest/Broken-v0", entry_point=_TermsDontSum)  # has sample_tasks: the full check runs
    with pytest.raises(ContractError, match=r"'metarltest/Broken-v0'.*not a metarl task family.*part 'info'"):
        envs.get_family("metarltest/Broken-v0")
    with pytest.raises(ValueError, match=r"unknown task family 'Pendulum-v0'.*Pendulum-v1"):  # gymnasium's hint
        envs.get_family("Pendulum-v0")
