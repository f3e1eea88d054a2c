"""A user's own task family (`--env module:Class` or a gymnasium id) whose code fails: whatever it raises, at import
or anywhere in the task contract's check, is one line naming the family, the part or step and the cause, never a
traceback; and an action space metarl cannot learn with is refused before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium
import pytest

import metarl.envs as envs
from metarl.envs import ContractError

# A family that honours the contract. Each case below breaks it by replacing one line.
FAMILY = '''
import dataclasses

import gymnasium
import numpy as np
from gymnasium.spaces import Box, Dict, Discrete


@dataclasses.dataclass(frozen=True)
class Goal:
    value: float


class Env(gymnasium.Env):
    """A point on a line moved towards a goal in [-1, 1]."""

    horizon = 5
    observation_space = Box(-np.inf, np.inf, (1,), np.float32)
    action_space = Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self._task, self._x = Goal(0.0), 0.0

    def sample_tasks(self, rng, n):
        return [Goal(float(v)) for v in rng.uniform(-1.0, 1.0, n)]

    @property
    def task(self):
        return self._task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "task" in options:
            task = options["task"]
            if not isinstance(task, Goal):
                raise ValueError(f"point: bad task {task!r}; allowed: Goal(value) with value in [-1, 1]")
            self._task = task
        self._x = 0.0
        return np.array([self._x], dtype=np.float32), {}

    def step(self, action):
        self._x += 0.1 * float(action[0])
        reward = -abs(self._x - self._task.value)
        return np.array([self._x], dtype=np.float32), reward, False, False, {"task": self._task, "reward_dist": reward}

    def close(self):
        pass
'''
VALID = {
    "ctor": "        self._task, self._x = Goal(0.0), 0.0",
    "sample": "    def sample_tasks(self, rng, n):",
    "action": "    action_space = Box(-1.0, 1.0, (1,), np.float32)",
    "observation": "    observation_space = Box(-np.inf, np.inf, (1,), np.float32)",
    "step": "        self._x += 0.1 * float(action[0])",
    "reset": "        self._x = 0.0",
    "task": "        return self._task",
    "bad task": "            if not isinstance(task, Goal):",
    "close": "        pass",
}


@pytest.fixture(autouse=True)
def restore_registries():
    """Undo every family (metarl) and env id (gymnasium) a test registers."""
    families_before = dict(envs._REGISTRY)
    ids_before = set(gymnasium.registry)
    yield
    envs._REGISTRY.clear()
    envs._REGISTRY.update(families_before)
    for gym_id in set(gymnasium.registry) - ids_before:
        del gymnasium.registry[gym_id]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """write(name, source) puts module `name` on sys.path (not yet imported) and returns its file."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str):
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return path

    return write


def family_source(part: str | None = None, line: str | None = None) -> str:
    """FAMILY with the line VALID[part] replaced by `line`."""
    if part is None:
        return FAMILY
    assert FAMILY.count(VALID[part]) == 1
    return FAMILY.replace(VALID[part], line)


def refusal(name: str, error: type) -> str:
    """The message of the error get_family(name) raises, checked to be of type `error` and on one line."""
    with pytest.raises((ValueError, ContractError)) as caught:
        envs.get_family(name)
    assert type(caught.value) is error, repr(caught.value)
    message = str(caught.value)
    assert "\n" not in message, message
    assert name not in envs.families()
    return message


def test_the_valid_family_passes(user_module):
    user_module("point_ok", family_source())
    assert envs.get_family("point_ok:Env").horizon == 5


def test_a_module_that_raises_at_import_is_one_value_error_naming_it(user_module):
    user_module("raises_at_import", "import numpy\nraise RuntimeError('no licence server\\nat host x')\n")
    message = refusal("raises_at_import:Env", ValueError)
    assert message == ("task family 'raises_at_import:Env': cannot import module 'raises_at_import' "
                       "(RuntimeError: no licence server at host x)")


def test_a_module_with_a_syntax_error_is_one_value_error_naming_file_and_line(user_module):
    path = user_module("bad_syntax", "import numpy\n\ndef f(:\n    pass\n")
    message = refusal("bad_syntax:Env", ValueError)
    assert message.startswith("task family 'bad_syntax:Env': cannot import module 'bad_syntax' (SyntaxError: ")
    assert f"({path}, line 3))" in message


@pytest.mark.parametrize("part, line, expected", [
    ("ctor", "        raise RuntimeError('no simulator')",
     "part 'construction': building the env with no arguments, Env(), raised RuntimeError: no simulator"),
    ("sample", "    def sample_tasks(self, n):",
     ("part 'sample_tasks': calling sample_tasks(rng, 4) raised TypeError: ",  # Python 3.11+: Env.sample_tasks()
      "sample_tasks() takes 2 positional arguments but 3 were given")),
    ("step", "        self._x += 1 / 0",
     "part 'step': step(action) raised ZeroDivisionError: division by zero"),
    ("reset", "        self._x = self.missing",
     "part 'reset': reset(seed=0, options={'task': Goal(value="),
    ("task", "        raise RuntimeError('task not loaded')",
     "part 'task': reading env.task raised RuntimeError: task not loaded"),
    ("bad task", "            if not -1 <= task.value <= 1:",
     "part 'bad task': reset(options={'task': object()}) raised AttributeError: 'object' object has no attribute "
     "'value'; a bad task must raise ValueError"),
    ("close", "        raise OSError('socket already closed')",
     "part 'close': close() raised OSError: socket already closed"),
])
def test_the_family_code_raising_anywhere_in_the_check_is_one_contract_error_naming_the_part(
        user_module, part, line, expected):
    user_module("point_broken", family_source(part, line))
    message = refusal("point_broken:Env", ContractError)
    assert message.startswith("task family 'point_broken:Env' breaks the task contract, ")
    for text in (expected,) if isinstance(expected, str) else expected:
        assert text in message


@pytest.mark.parametrize("space, shown", [
    ("Discrete(3)", "Discrete(3)"),
    ("Box(-1, 1, (1,), np.int64)", "Box(-1, 1, (1,), int64)"),
    ("Box(-1.0, 1.0, (2, 3), np.float32)", "Box(-1.0, 1.0, (2, 3), float32)"),
])
def test_an_action_space_metarl_does_not_support_is_refused_by_the_contract(user_module, space, shown):
    user_module("point_discrete", family_source("action", f"    action_space = {space}"))
    message = refusal("point_discrete:Env", ContractError)
    assert message.startswith("task family 'point_discrete:Env' breaks the task contract, part 'spaces': metarl "
                              "supports continuous Box action spaces")
    assert message.endswith(f"this family's action space is {shown}")


def test_an_observation_space_metarl_does_not_support_is_refused_by_the_contract(user_module):
    user_module("point_dict", family_source("observation", "    observation_space = Dict({'x': Discrete(2)})"))
    message = refusal("point_dict:Env", ContractError)
    assert "part 'spaces': metarl supports Box observation spaces" in message and "Dict(" in message


def test_a_long_exception_message_is_cut(user_module):
    user_module("point_long", family_source("ctor", "        raise RuntimeError('x\\n' * 1000)"))
    message = refusal("point_long:Env", ContractError)
    assert "raised RuntimeError: x x x" in message and message.endswith("...") and len(message) < 400


def test_a_gymnasium_id_whose_env_fails_is_refused_in_one_line(user_module):
    user_module("point_gym", family_source("ctor", "        raise RuntimeError('no simulator')")
                + "\ngymnasium.register('metarltest/PointBroken-v0', entry_point=Env, max_episode_steps=5)\n")
    message = refusal("point_gym:metarltest/PointBroken-v0", ContractError)
    assert "'metarltest/PointBroken-v0'" in message and "not a metarl task family" in message
    assert "part 'construction'" in message and "RuntimeError: no simulator" in message
    user_module("raises_late", "raise KeyError('config')\n")
    gymnasium.register("metarltest/Late-v0", entry_point="raises_late:Env")
    message = refusal("metarltest/Late-v0", ValueError)
    assert "cannot load its entry point 'raises_late:Env' (KeyError: 'config')" in message


def test_the_cli_reports_a_module_that_raises_at_import_in_one_line(user_module, tmp_path, capsys):
    from metarl.cli import main

    user_module("raises_at_import", "raise RuntimeError('no licence server')\n")
    assert main(["train", "--env", "raises_at_import:Env", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metarl: error: task family 'raises_at_import:Env': cannot import "
                                               "module 'raises_at_import' (RuntimeError: no licence server)"), err
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_discrete_action_space_in_one_line_before_creating_the_run(tmp_path):
    (tmp_path / "point_discrete.py").write_text(family_source("action", "    action_space = Discrete(3)"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "metarl", "train", "--env", "point_discrete:Env",
                           "--run-dir", str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("metarl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "part 'spaces'" in proc.stderr and "Discrete(3)" in proc.stderr
    assert not (tmp_path / "run").exists()
