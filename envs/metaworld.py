"""Meta-World task families (Yu et al., "Meta-World", CoRL 2019; the `metaworld` package, Farama Foundation):
`metaworld-ml1:<task>` (one task type, its 50 training goals and 50 held-out goals) and `metaworld-ml10` (10 training
task types, 5 held-out types, 50 goals each).

A task is (task type, split, goal index) into the benchmark's own train or test list, built once per process with a
fixed seed (`BENCHMARK_SEED`), so a task names the same goal in every process and session; training draws only from
the train list, the held-out evaluation only from the test list (`sample_test_tasks`). Built on the package's
`metaworld.ML1(name)` / `ML10()` + `set_task` API: its `gym.make("Meta-World/ML1-train")` fails (its issue 541) and,
at the package's head, serves the test goals (its pull request 573). Success is `info["success"]` at any step of an
episode (the sampler records it). `metaworld` pins `mujoco==3.3.0`, so it is an optional extra in its own
environment (`pip install -e ".[metaworld]"`); this module imports it only when a Meta-World family is first used.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import gymnasium
import mujoco
import numpy as np
from gymnasium.spaces import Box
from gymnasium.vector.utils import batch_space
from metarl.envs.tasks import check_count
from metarl.envs.vector import TaskVectorEnv

# The seed of the benchmark's goal lists (metaworld.ML1(name, seed=...), ML10(seed=...)): fixed, so that a task's
# goal index means the same goal everywhere. ML1 draws its test goals with seed + 1, ML10 its test types' with seed.
BENCHMARK_SEED = 0
# Meta-World's own episode length (its envs' max_path_length; they refuse to step past it).
MAX_HORIZON = 500
SPLITS = ("train", "test")
INSTALL = ('pip install -e ".[metaworld]" in an environment of its own (metaworld pins mujoco==3.3.0; '
           "docs/task-families.md#meta-world)")


def import_metaworld():
    """The `metaworld` package, or one ValueError line saying how to install it."""
    try:
        import metaworld
    except ImportError as exc:
        raise ValueError(f"the Meta-World families need the metaworld package ({exc}): {INSTALL}") from None
    return metaworld


@dataclass(frozen=True)
class MetaWorldTask:
    """A Meta-World task: a task type (`env_name`, e.g. 'reach-v3'), the benchmark split it belongs to ('train' or
    'test') and the index of its goal in the benchmark's list of that type's goals in that split (0..49)."""

    env_name: str
    split: str
    goal: int


@dataclass(frozen=True)
class Benchmark:
    """One Meta-World benchmark as metarl uses it: task types per split, their env classes and goal lists."""

    label: str
    types: dict  # split -> tuple of task type names, in the benchmark's order
    classes: dict  # task type name -> its env class
    goals: dict  # (split, task type) -> list of metaworld Task (pickled goal data)

    def task_data(self, task: MetaWorldTask):
        return self.goals[(task.split, task.env_name)][task.goal]


@functools.lru_cache(maxsize=None)
def benchmark(kind: str, env_name: str | None = None) -> Benchmark:
    """The ML1 benchmark of `env_name` or the ML10 benchmark, built once per process (building it resets each
    type's env 50 times per split: seconds)."""
    metaworld = import_metaworld()
    if kind == "ml1":
        bench = metaworld.ML1(env_name, seed=BENCHMARK_SEED)
        label = f"metaworld-ml1:{env_name.removesuffix('-v3')}"
    else:
        bench = metaworld.ML10(seed=BENCHMARK_SEED)
        label = "metaworld-ml10"
    classes = {**bench.train_classes, **bench.test_classes}
    types = {"train": tuple(bench.train_classes), "test": tuple(bench.test_classes)}
    goals = {}
    for split, tasks in (("train", bench.train_tasks), ("test", bench.test_tasks)):
        for t in tasks:
            goals.setdefault((split, t.env_name), []).append(t)
    return Benchmark(label, types, classes, goals)


def ml1_task_names() -> list[str]:
    """The task types ML1 accepts, without the '-v3' suffix (reach, push, pick-place, ...)."""
    return [name.removesuffix("-v3") for name in import_metaworld().ML1.ENV_NAMES]


def sample_split(bench: Benchmark, split: str, rng: np.random.Generator, n: int) -> list[MetaWorldTask]:
    """`n` tasks of `split` drawn with `rng` alone: task types in turn from a random order (every type equally often
    within one draw, as far as `n` allows), goals without replacement within a type until its list is used up."""
    types = bench.types[split]
    n = check_count(n)
    order = [types[i] for i in rng.permutation(len(types))]
    picked = [order[i % len(order)] for i in range(n)]
    tasks, pools = [], {}
    for env_name in picked:
        pool = pools.get(env_name)
        if not pool:
            pool = pools[env_name] = list(rng.permutation(len(bench.goals[(split, env_name)])))
        tasks.append(MetaWorldTask(env_name, split, int(pool.pop())))
    return tasks


def check_task(bench: Benchmark, task) -> MetaWorldTask:
    """`task` if it is a MetaWorldTask of `bench` (a type of its split, a goal index in range), else ValueError."""
    if not isinstance(task, MetaWorldTask):
        raise ValueError(f"{bench.label}: expected a MetaWorldTask, got {task!r} ({type(task).__name__})")
    if task.split not in SPLITS or task.env_name not in bench.types[task.split]:
        allowed = "; ".join(f"{s}: {', '.join(bench.types[s])}" for s in SPLITS)
        raise ValueError(f"{bench.label}: task type {task.env_name!r} in split {task.split!r} is not in the "
                         f"benchmark; allowed: {allowed}")
    count = len(bench.goals[(task.split, task.env_name)])
    if isinstance(task.goal, bool) or not isinstance(task.goal, (int, np.integer)) or not 0 <= task.goal < count:
        raise ValueError(f"{bench.label}: goal {task.goal!r} is out of range; allowed: an int in [0, {count - 1}]")
    return task


# -- one Meta-World env per copy, sharing what can be shared --------------------------------------------------------
_DATA_FIELDS: list[str] = []


def _data_fields(data: mujoco.MjData) -> list[str]:
    if not _DATA_FIELDS:
        _DATA_FIELDS.extend(n for n in dir(data) if not n.startswith("_")
                            and isinstance(getattr(data, n, None), np.ndarray))
    return _DATA_FIELDS


def clone_env(env, model: mujoco.MjModel):
    """A copy of the Meta-World env `env` on `model` (a copy of its class's model) with its own MjData, without the
    package's 0.2 s, 21 MB constructor: the env's attributes shallow-copied (Meta-World reassigns, never edits in
    place, what a reset or a step changes: checked against freshly built envs in tests/test_metaworld.py), and any
    attribute that is a view into `env`'s MjData (Meta-World keeps some, e.g. `init_left_pad`) made the same view
    into the copy's."""
    clone = object.__new__(type(env))
    clone.__dict__.update(env.__dict__)
    clone.model, clone.data = model, mujoco.MjData(model)
    src = env.data
    for name, value in env.__dict__.items():
        if not isinstance(value, np.ndarray) or value.base is None:
            continue
        for field in _data_fields(src):
            owner = getattr(src, field)
            if owner.size and np.may_share_memory(value, owner):
                offset = value.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
                target = getattr(clone.data, field)
                setattr(clone, name, np.ndarray(value.shape, value.dtype, buffer=target, offset=offset,
                                               strides=value.strides))
                break
    return clone


class _Pool:
    """Meta-World envs for a batch of copies: one built env per task type (the template), one model per distinct
    task (a reset writes the task's fixture and goal positions into the model, so copies of different goals cannot
    share one) and one env per copy (`clone_env`), reused across task changes."""

    def __init__(self, bench: Benchmark):
        self.bench = bench
        self.templates: dict[str, object] = {}
        self.models: dict[str, list] = {}  # task type -> model copies, handed to distinct tasks in turn
        self.free: dict[str, list] = {}  # task type -> per-copy envs not in use

    def template(self, env_name: str):
        if env_name not in self.templates:
            self.templates[env_name] = self.bench.classes[env_name]()
        return self.templates[env_name]

    def assign(self, envs: list, tasks: list) -> list:
        """Per-copy envs for `tasks` (one per copy), reusing `envs` (the previous assignment) where the type
        matches; each distinct task gets its own model and the task set on its envs."""
        for env in envs:
            if env is not None:
                self.free.setdefault(env._metarl_type, []).append(env)
        models, used = {}, {}
        out = []
        for task in tasks:
            if task not in models:
                copies = self.models.setdefault(task.env_name, [])
                k = used.get(task.env_name, 0)
                used[task.env_name] = k + 1
                if k == len(copies):
                    copies.append(copy.copy(self.template(task.env_name).model))
                models[task] = copies[k]
            free = self.free.get(task.env_name)
            env = free.pop() if free else None
            if env is None:
                env = clone_env(self.template(task.env_name), models[task])
                env._metarl_type = task.env_name
            env.model = models[task]
            if getattr(env, "_metarl_task", None) != task:
                env.set_task(self.bench.task_data(task))
                env._metarl_task = task
            out.append(env)
        return out


def spaces(env) -> tuple[Box, Box]:
    """A family's action and observation spaces from one of its Meta-World envs (every type has the same shapes):
    the env's action box, and its observation's shape unbounded (the sampler reads nothing else)."""
    return (Box(env.action_space.low, env.action_space.high, dtype=np.float32),
            Box(-np.inf, np.inf, env.observation_space.shape, np.float64))


def _step_info(env, action: np.ndarray):
    """One Meta-World step: observation, reward, terminated and the success flag (Meta-World's own truncation at
    its 500 steps never comes first: horizons are at most MAX_HORIZON)."""
    obs, reward, terminated, _, info = env.step(action)
    return obs, float(reward), bool(terminated), float(info["success"])


class MetaWorldEnv(gymnasium.Env):
    """A Meta-World benchmark as a metarl task family (one env; the sampler uses MetaWorldBatch). Subclasses set
    `kind` ('ml1' or 'ml10') and, for ML1, `env_name`. Reward: Meta-World's (v2, in [0, 10] per step), as one term
    `reward_metaworld`; `info["success"]` is Meta-World's success flag of the step."""

    kind = "ml10"
    env_name: str | None = None
    reports_success = True
    horizon = MAX_HORIZON
    max_horizon = MAX_HORIZON
    metadata = {"render_modes": []}

    def __init__(self):
        self.bench = benchmark(self.kind, self.env_name)
        self._pool = _Pool(self.bench)
        self._task = None
        self._env = None
        self.action_space, self.observation_space = spaces(self._pool.template(self.bench.types["train"][0]))

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list[MetaWorldTask]:
        """`n` training tasks (the benchmark's train list) drawn with `rng` alone."""
        return sample_split(self.bench, "train", rng, n)

    def sample_test_tasks(self, rng: np.random.Generator, n: int) -> list[MetaWorldTask]:
        """`n` held-out tasks (the benchmark's test list: ML1's test goals, ML10's test types) drawn with `rng`."""
        return sample_split(self.bench, "test", rng, n)

    @property
    def task(self) -> MetaWorldTask:
        if self._task is None:
            return MetaWorldTask(self.bench.types["train"][0], "train", 0)
        return self._task

    @task.setter
    def task(self, task) -> None:
        self._task = check_task(self.bench, task)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.task = options["task"]
        self._env = self._pool.assign([self._env], [self.task])[0]
        obs, _ = self._env.reset()
        return obs, {"task": self.task}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        if action.shape == self.action_space.shape:
            action = np.clip(action, self.action_space.low, self.action_space.high)
        obs, reward, terminated, success = _step_info(self._env, action)
        info = {"task": self.task, "success": success, "reward_metaworld": reward}
        return obs, reward, terminated, False, info


class _Copies:
    """Meta-World envs for a run of copies, stepped one by one in this process."""

    def __init__(self, bench: Benchmark):
        self._pool = _Pool(bench)
        self._envs: list = []

    def set_tasks(self, tasks: list) -> None:
        self._envs = self._pool.assign(self._envs or [None] * len(tasks), tasks)

    def reset(self) -> np.ndarray:
        return np.stack([env.reset()[0] for env in self._envs])

    def step(self, actions: np.ndarray):
        """Observations, rewards, terminated flags and success flags of every copy after one step."""
        out = [_step_info(env, action) for env, action in zip(self._envs, actions)]
        obs, rewards, terminated, success = zip(*out)
        return np.stack(obs), np.array(rewards), np.array(terminated, dtype=bool), np.array(success)

    def close(self) -> None:
        for env in self._pool.templates.values():
            env.close()


def _serve(conn, bench: Benchmark) -> None:
    """A worker process of MetaWorldBatch: its share of the copies (_Copies) of the parent's benchmark (sent, not
    rebuilt: building ML10's goal lists takes seconds), driven by (command, argument) messages; every answer is
    ("ok", result) or ("error", one line)."""
    from metarl.envs.contract import describe_exception

    try:
        copies = _Copies(bench)
    except Exception as exc:  # e.g. the benchmark cannot be built: said in the parent, in one line
        conn.send(("error", describe_exception(exc)))
        return
    conn.send(("ok", None))
    while True:
        try:
            command, argument = conn.recv()
        except (EOFError, KeyboardInterrupt):  # the parent has gone (or Ctrl-C reached the whole group)
            return
        try:
            if command == "close":
                copies.close()
                conn.send(("ok", None))
                return
            result = {"tasks": copies.set_tasks, "reset": lambda _: copies.reset(),
                      "step": copies.step}[command](argument)
            conn.send(("ok", result))
        except Exception as exc:
            conn.send(("error", describe_exception(exc)))


class _Workers:
    """The copies split over worker processes (spawned: nothing of the parent's torch state is inherited), each
    stepping its share one by one; Meta-World's Python per copy then runs on several cores. Same interface as
    _Copies, same numbers (each copy is independent and deterministic)."""

    def __init__(self, bench: Benchmark, num_envs: int, processes: int):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._shares = np.array_split(np.arange(num_envs), processes)
        self._conns, self._procs = [], []
        for _ in self._shares:
            parent, child = context.Pipe()
            proc = context.Process(target=_serve, args=(child, bench), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._gather()

    def _call(self, command: str, arguments: list) -> list:
        if not self._conns:
            raise RuntimeError("MetaWorldBatch: the batch is closed")
        sent = []
        for conn, argument in zip(self._conns, arguments):
            try:
                conn.send((command, argument))
                sent.append(True)
            except OSError:  # a worker that died: its pipe is broken
                sent.append(False)
        return self._gather(sent)

    def _gather(self, sent: list | None = None) -> list:
        results, errors = [], []
        for i, conn in enumerate(self._conns):
            try:
                if sent is not None and not sent[i]:
                    raise EOFError
                status, value = conn.recv()
            except (EOFError, OSError):
                self._procs[i].join(timeout=1)
                status, value = "error", f"worker process {i} died (exit code {self._procs[i].exitcode})"
            results.append(value)
            if status != "ok":
                errors.append(value)
        if errors:
            self.close(wait=False)
            raise RuntimeError(f"MetaWorldBatch: a worker process failed: {errors[0]}")
        return results

    def set_tasks(self, tasks: list) -> None:
        self._call("tasks", [[tasks[i] for i in share] for share in self._shares])

    def reset(self) -> np.ndarray:
        return np.concatenate(self._call("reset", [None] * len(self._conns)))

    def step(self, actions: np.ndarray):
        parts = self._call("step", [actions[share] for share in self._shares])
        return tuple(np.concatenate(column) for column in zip(*parts))

    def close(self, wait: bool = True) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", None))
                if wait:
                    conn.recv()
            except (OSError, EOFError):
                pass
        for proc in self._procs:
            proc.join(timeout=10 if wait else 0.1)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []


class MetaWorldBatch(TaskVectorEnv):
    """`num_envs` copies of a Meta-World family. Meta-World's step is Python (each task type's own reward and
    observation code) around 5 simulator steps, so each copy is stepped on its own: in this process with
    `num_threads` 1, else split over `num_threads` worker processes (Python per copy runs on one core per process).
    What the batch saves is the package's constructor per copy (one built env per task type, cloned). Meta-World's
    episodes never terminate early; `truncated` turns True at the horizon; `info` holds each copy's `success` and
    the reward term `reward_metaworld`. `reset(seed=...)` changes nothing: a Meta-World reset is a function of the
    task alone (the goal and object positions are the task's), so the episodes differ only by the actions."""

    can_terminate = False

    def __init__(self, family: type, num_envs: int, *, num_threads: int = 1, max_episode_steps: int = MAX_HORIZON):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
        if not 1 <= max_episode_steps <= MAX_HORIZON:
            raise ValueError(f"{family.__name__}: horizon {max_episode_steps!r} is out of range; allowed: 1 to "
                             f"{MAX_HORIZON} (Meta-World's episode length)")
        self.family = family
        self.bench = benchmark(family.kind, family.env_name)
        self.num_envs = int(num_envs)
        self.max_episode_steps = max_episode_steps
        first = self.bench.classes[self.bench.types["train"][0]]()
        self.single_action_space, self.single_observation_space = spaces(first)
        first.close()
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        processes = min(int(num_threads), self.num_envs)
        self._copies = _Copies(self.bench) if processes == 1 else _Workers(self.bench, self.num_envs, processes)
        self._t = 0
        self.set_attr("task", MetaWorldTask(self.bench.types["train"][0], "train", 0))

    def sample_tasks(self, rng, n):
        return sample_split(self.bench, "train", rng, n)

    def _check_task(self, task):
        return check_task(self.bench, task)

    def _tasks_changed(self) -> None:
        self._copies.set_tasks(self._tasks)

    def reset(self, *, seed=None, options: dict | None = None):
        if options and "task" in options:
            self.set_attr("task", options["task"])
        self._t = 0
        return self._copies.reset(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.num_envs,) + self.single_action_space.shape:
            raise ValueError(f"actions must have shape {(self.num_envs,) + self.single_action_space.shape}, "
                             f"got {actions.shape}")
        actions = np.clip(actions, self.single_action_space.low, self.single_action_space.high)
        obs, rewards, terminated, success = self._copies.step(actions)
        self._t += 1
        truncated = np.full(self.num_envs, self._t >= self.max_episode_steps)
        return obs, rewards, terminated, truncated, {"success": success, "reward_metaworld": rewards.copy()}

    def close_extras(self, **kwargs) -> None:
        self._copies.close()


def family_class(kind: str, env_name: str | None = None) -> type:
    """The single-env class of ML1's `env_name` (e.g. 'reach-v3') or of ML10, with its batched form."""
    if kind == "ml10":
        return _ML10
    return _ml1_class(env_name)


class _ML10(MetaWorldEnv):
    """Meta-World ML10: 10 training task types, 5 held-out types, 50 goals each; horizon 500"""

    kind = "ml10"


@functools.lru_cache(maxsize=None)
def _ml1_class(env_name: str) -> type:
    short = env_name.removesuffix("-v3")
    name = "MetaWorldML1_" + "".join(part.capitalize() for part in short.split("-"))
    doc = f"Meta-World ML1 {short}: 50 training goals, 50 held-out goals; horizon 500"
    return type(name, (MetaWorldEnv,), {"kind": "ml1", "env_name": env_name, "__doc__": doc,
                                        "__module__": __name__})
