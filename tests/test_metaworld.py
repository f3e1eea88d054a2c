"""The Meta-World families (metarl.envs.metaworld): the task contract, the benchmark's train/test split, success read
from Meta-World's info, the batched form against the package's own envs, and a training step that reports success.

They need the `metaworld` extra, which pins mujoco==3.3.0 and so lives in an environment of its own (.ci/run makes
one); elsewhere only the one-line refusal is tested."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.config import Config

try:
    import metaworld
except ImportError:
    metaworld = None

needs_metaworld = pytest.mark.skipif(
    metaworld is None, reason='the metaworld extra is not installed here (pip install -e ".[metaworld]" in an '
    "environment of its own: it pins mujoco==3.3.0); .ci/run tests it in one")


@pytest.mark.skipif(metaworld is not None, reason="metaworld is installed here")
def test_without_the_extra_a_metaworld_family_is_refused_in_one_line_saying_how_to_install():
    from metarl.envs import families_on_first_use, get_family

    assert {"metaworld-ml1:<task>", "metaworld-ml10"} <= set(families_on_first_use())
    with pytest.raises(ValueError, match=r"metaworld package .*pip install -e \"\.\[metaworld\]\"") as info:
        get_family("metaworld-ml1:reach")
    assert "\n" not in str(info.value)


@needs_metaworld
@pytest.mark.parametrize("name", ["metaworld-ml1:reach", "metaworld-ml10"])
def test_the_families_honour_the_task_contract(name):
    from metarl.envs import check_family, get_family, resolve_horizon

    family = get_family(name)
    check_family(family.env_cls, family.name)
    assert resolve_horizon(family) == 500
    assert resolve_horizon(family, 150) == 150
    with pytest.raises(ValueError, match="horizon 501 is out of range .* allowed: 1 to 500"):
        resolve_horizon(family, 501)
    from metarl.runs import RunError, resolve_config

    with pytest.raises(RunError, match="horizon 600 is out of range"):  # the command line's one line, no traceback
        resolve_config(name, None, {"horizon": 600}, {})


@needs_metaworld
def test_names_are_checked_in_one_line():
    from metarl.envs import get_family

    assert get_family("metaworld-ml1:reach-v3") is get_family("metaworld-ml1:reach")
    with pytest.raises(ValueError, match="unknown ML1 task 'reachh'; allowed: .*pick-place"):
        get_family("metaworld-ml1:reachh")
    with pytest.raises(ValueError, match="takes no task name"):
        get_family("metaworld-ml10:reach")


@needs_metaworld
@pytest.mark.parametrize("task", ["reach", "push", "pick-place"])
def test_ml1_training_and_held_out_goals_never_meet(task):
    """The trap of the package's head (its pull request 573): ML1-train serving the test goals. Here the training
    list's goals and the test list's are disjoint, and sampling keeps to each."""
    from metarl.envs.metaworld import MetaWorldTask, benchmark, sample_split

    bench = benchmark("ml1", f"{task}-v3")
    goals = {split: {tuple(np.round(_rand_vec(t), 9)) for t in bench.goals[(split, f"{task}-v3")]}
             for split in ("train", "test")}
    assert len(goals["train"]) == len(goals["test"]) == 50
    assert not goals["train"] & goals["test"]
    rng = np.random.default_rng(0)
    drawn = sample_split(bench, "train", rng, 120)
    assert {t.split for t in drawn} == {"train"}
    assert len({t.goal for t in drawn[:50]}) == 50  # without replacement until the list is used up
    assert {t.split for t in sample_split(bench, "test", rng, 40)} == {"test"}
    assert drawn == sample_split(bench, "train", np.random.default_rng(0), 120)
    assert isinstance(drawn[0], MetaWorldTask)


@needs_metaworld
def test_ml10_training_never_sees_a_held_out_type_and_evaluation_uses_only_them():
    from metarl.envs import make

    from metarl.trainer import Trainer

    env = make("metaworld-ml10").unwrapped
    train_types, test_types = set(env.bench.types["train"]), set(env.bench.types["test"])
    assert len(train_types) == 10 and len(test_types) == 5 and not train_types & test_types
    tasks = env.sample_tasks(np.random.default_rng(1), 40)
    assert {t.env_name for t in tasks} == train_types  # every type, 4 times each
    assert all(sum(t.env_name == name for t in tasks) == 4 for name in train_types)
    assert {t.env_name for t in env.sample_test_tasks(np.random.default_rng(1), 10)} == test_types
    with pytest.raises(ValueError, match="task type 'drawer-open-v3' in split 'train' is not in the benchmark"):
        env.reset(options={"task": type(tasks[0])("drawer-open-v3", "train", 0)})
    env.close()
    trainer = Trainer(Config(env="metaworld-ml10", meta_batch_size=2, episodes_per_task=1, horizon=5,
                             hidden_sizes=[8], eval_tasks=5, eval_episodes_per_task=1, eval_steps=0))
    try:
        held_out = [step.tasks for step in trainer.adaptation_trace()][0]
        training = [step.tasks for step in trainer.adaptation_trace(split="train")][0]
    finally:
        trainer.close()
    assert {t.env_name for t in held_out} == test_types and {t.split for t in held_out} == {"test"}
    assert {t.env_name for t in training} <= train_types


def _rand_vec(task) -> np.ndarray:
    import pickle

    return pickle.loads(task.data)["rand_vec"]


@needs_metaworld
def test_the_batch_steps_exactly_as_the_packages_own_envs_for_every_ml10_type():
    """Every ML10 type, two goals each, interleaved in one batch (so a state shared between copies would show),
    against envs built by Meta-World's constructor: observations, rewards and success equal; then the tasks are
    shuffled over the copies (envs and models reused) and the comparison repeated."""
    from metarl.envs import make_batched
    from metarl.envs.metaworld import MetaWorldTask, benchmark

    bench = benchmark("ml10")
    tasks = [MetaWorldTask(name, split, goal) for split in ("train", "test") for name in bench.types[split]
             for goal in (3, 17)]
    batch = make_batched("metaworld-ml10", len(tasks), max_episode_steps=30)
    rng = np.random.default_rng(0)
    for order in (np.arange(len(tasks)), rng.permutation(len(tasks))):
        ordered = [tasks[i] for i in order]
        reference = []
        for task in ordered:
            env = bench.classes[task.env_name]()
            env.set_task(bench.task_data(task))
            reference.append(env)
        batch.set_attr("task", ordered)
        obs, _ = batch.reset(seed=0)
        np.testing.assert_array_equal(obs, np.stack([env.reset()[0] for env in reference]))
        for _ in range(30):
            actions = rng.uniform(-1, 1, (len(tasks), 4)).astype(np.float32)
            obs, reward, terminated, truncated, info = batch.step(actions)
            for i, env in enumerate(reference):
                o, r, _, _, inf = env.step(actions[i])
                np.testing.assert_array_equal(obs[i], o)
                assert reward[i] == r and info["success"][i] == float(inf["success"])
            assert not terminated.any()
        assert truncated.all()
        for env in reference:
            env.close()
    batch.close()


@needs_metaworld
def test_worker_processes_step_exactly_as_one_process_and_a_dead_worker_is_said_in_one_line():
    import os
    import signal

    from metarl.envs import make_batched
    from metarl.envs.metaworld import MetaWorldTask

    tasks = [MetaWorldTask(name, "train", goal) for name in ("reach-v3", "push-v3", "door-open-v3")
             for goal in (0, 9)] + [MetaWorldTask("lever-pull-v3", "test", 4)]
    one = make_batched("metaworld-ml10", len(tasks), num_threads=1, max_episode_steps=20)
    two = make_batched("metaworld-ml10", len(tasks), num_threads=2, max_episode_steps=20)
    rng = np.random.default_rng(1)
    for batch in (one, two):
        batch.set_attr("task", tasks)
    np.testing.assert_array_equal(one.reset()[0], two.reset()[0])
    for _ in range(20):
        actions = rng.uniform(-1, 1, (len(tasks), 4))
        a, b = one.step(actions), two.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(a[4]["success"], b[4]["success"])
    os.kill(two._copies._procs[1].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="worker process 1 died") as info:
        two.step(rng.uniform(-1, 1, (len(tasks), 4)))
    assert "\n" not in str(info.value)
    one.close()
    two.close()


@needs_metaworld
def test_the_sampler_records_success_at_any_step_as_the_env_reports_it():
    """Reach: one task's episodes steered to the goal, the other's held still. The sampler's success per episode is
    what a single env's info says when the episode's actions are replayed, and the steered one succeeded."""
    from metarl.envs import make

    from metarl.sampling.sampler import Sampler

    sampler = Sampler("metaworld-ml1:reach", 2, 2, horizon=60)
    env = make("metaworld-ml1:reach").unwrapped
    tasks = env.sample_tasks(np.random.default_rng(3), 2)

    def act(obs):
        goals = np.stack([e._target_pos for e in sampler.env._copies._envs])  # the batch's envs: the test's peek
        goals = torch.as_tensor(goals, dtype=obs.dtype).view(2, 2, 3)
        steer = torch.clamp(10.0 * (goals - obs[..., :3]), -1, 1)
        actions = torch.zeros(2, 2, 4, dtype=obs.dtype)
        actions[0, :, :3] = steer[0]
        return actions

    episodes, _ = sampler.sample(act, tasks, seed=0)
    assert episodes.successes.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    for k, task in enumerate(tasks):
        env.reset(options={"task": task})
        replayed = max(env.step(episodes.actions[k, t, 0].numpy())[4]["success"] for t in range(60))
        assert replayed == episodes.successes[k, 0].item()
    sampler.close()
    env.close()


@needs_metaworld
def test_training_and_evaluation_report_success_as_documented():
    import re

    from metarl.trainer import METRICS, Trainer, evaluation_metrics, logged_metrics

    trainer = Trainer(Config(env="metaworld-ml1:reach", meta_batch_size=2, episodes_per_task=2, horizon=10,
                             hidden_sizes=[8], eval_tasks=2, eval_episodes_per_task=2, eval_steps=1))
    try:
        metrics = trainer.step()
        result = trainer.evaluate(per_task=True)
    finally:
        trainer.close()
    logged = {k for k in metrics if "/" in k}
    assert logged == set(logged_metrics(trainer.cfg)) and logged < set(METRICS)
    assert {"success/pre_adaptation", "success/post_adaptation"} <= logged
    assert 0.0 <= metrics["success/post_adaptation"] <= 1.0
    evaluated = {re.sub(r"_\d+", "_K", f"eval/{k}") for k in result if k != "per_task"}
    assert evaluated == set(evaluation_metrics(trainer.cfg)) and "eval/success_step_K" in evaluated
    assert result["success_step_1"] == pytest.approx(np.mean([t["success"][1] for t in result["per_task"]]))
    assert {t["task"]["split"] for t in result["per_task"]} == {"test"}


def test_report_cells_put_the_success_rate_beside_the_return_where_runs_report_it():
    from metarl.experiments.records import summarise
    from metarl.experiments.tables import fmt_cell

    cell = summarise({0: {"return_step_1": 400.0, "success_step_1": 0.5},
                      1: {"return_step_1": 420.0, "success_step_1": 0.7}})
    assert fmt_cell(cell, 1) == "410.0 ± 10.0; success 60% ± 10%"
    assert fmt_cell(summarise({0: {"return_step_1": 400.0}}), 1) == "400.0 ± 0.0"


def test_the_ml10_table_cites_the_meta_world_papers_success_rates_and_figures_have_plain_file_names():
    from metarl.experiments.sweep import run_name
    from metarl.experiments.tables import env_table
    from metarl.runs import file_safe

    rows = "\n".join(env_table("metaworld-ml10", {}))
    assert "| MAML, Yu et al. 2019" in rows and "success 31.6% (meta-test; meta-train 44.4%)" in rows
    assert "RL2" in rows and "PEARL" in rows
    assert all(row.count("|") == rows.splitlines()[0].count("|") for row in rows.splitlines())
    assert file_safe("metaworld-ml1:reach") == "metaworld-ml1-reach"
    assert run_name("metaworld-ml1:reach", "maml", 0) == "metaworld-ml1-reach-maml-seed0"


def test_the_report_shows_meta_train_success_from_eval_train_json_of_the_same_checkpoint():
    from metarl.experiments.records import EVAL_TRAIN_FILE, PUBLISHED_FILES, RunRecord, method_cells
    from metarl.experiments.tables import training_tasks_lines

    def record(seed, train_iteration):
        returns = {f"return_step_{k}": 100.0 + k for k in range(4)}
        train = {"iteration": train_iteration, "returns": {**returns, **{f"success_step_{k}": 0.25 * k
                                                                       for k in range(4)}}}
        cfg = Config(env="nav2d", algo="maml", seed=seed, iterations=10)
        return RunRecord(name=f"r{seed}", path=None, env="nav2d", algo="maml", seed=seed, cfg=cfg,
                         iterations_done=10, curve=[], held_out={}, timing=None, iteration_time_s=1.0,
                         eval={"iteration": 10, "steps": 3, "returns": returns}, method="maml", eval_train=train)

    assert EVAL_TRAIN_FILE == "eval-train.json" and EVAL_TRAIN_FILE in PUBLISHED_FILES
    cells = method_cells([record(0, 10), record(1, 9)], [])  # seed 1's is of an older checkpoint: left out
    assert cells["nav2d"]["maml"]["train"]["seeds"] == [0]
    (line,) = [line for line in training_tasks_lines(cells["nav2d"]) if line]
    assert "(1 seed): 0: 0%, 1: 25%, 2: 50%, 3: 75%" in line
    assert training_tasks_lines(method_cells([record(0, 9)], [])["nav2d"]) == []


@needs_metaworld
def test_a_sweep_evaluates_a_family_with_its_own_split_on_both_and_the_report_shows_both(tmp_path):
    """The grid's final evaluation of a Meta-World cell: the held-out tasks (eval.json) and the training tasks
    (eval-train.json), so ML10's meta-train and meta-test success come out of `metarl sweep` + `metarl report`."""
    import json

    from metarl.experiments import report as report_mod
    from metarl.experiments.sweep import train_cell

    overrides = {"iterations": 1, "meta_batch_size": 2, "episodes_per_task": 1, "horizon": 5, "hidden_sizes": [8],
                 "eval_episodes_per_task": 1, "sampler_threads": 1}
    status = train_cell(tmp_path, "metaworld-ml1:reach", "maml", 0, overrides, jobs=1, eval_tasks=2)
    assert status.endswith("evaluated (and on its training tasks)")
    run_dir = tmp_path / "metaworld-ml1-reach-maml-seed0"
    held_out, training = (json.loads((run_dir / name).read_text()) for name in ("eval.json", "eval-train.json"))
    assert {t["task"]["split"] for t in held_out["per_task"]} == {"test"}
    assert {t["task"]["split"] for t in training["per_task"]} == {"train"}
    assert train_cell(tmp_path, "metaworld-ml1:reach", "maml", 0, overrides, jobs=1, eval_tasks=2).endswith(
        "already trained (1/1 iterations) and evaluated")  # both evaluations current: nothing redone
    (run_dir / "eval-train.json").unlink()
    assert train_cell(tmp_path, "metaworld-ml1:reach", "maml", 0, overrides, jobs=1, eval_tasks=2).endswith(
        "(and on its training tasks)")  # the missing one only
    report = report_mod.build_report(tmp_path, envs=["metaworld-ml1:reach"], algos=["maml"], seeds=[0])
    markdown = report_mod.render_markdown({**report, "plots": {}})
    assert "on the training tasks (meta-train), success after k steps (1 seed)" in markdown
