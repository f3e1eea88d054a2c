"""The trainer end to end on nav2d: repeatable from a seed, and it learns (MAML and ANIL)."""

import re

import pytest

from metarl.config import Config, ConfigError
from metarl.trainer import Trainer

SMALL = dict(env="nav2d", meta_batch_size=10, episodes_per_task=10, eval_tasks=10, eval_episodes_per_task=10,
             eval_steps=1, sampler_threads=1)


def test_same_seed_gives_identical_metrics():
    runs = []
    for _ in range(2):
        trainer = Trainer(Config(algo="maml", seed=7, **SMALL))
        runs.append([{k: v for k, v in trainer.step().items() if not k.startswith("time/")} for _ in range(3)])
        runs[-1].append(trainer.evaluate())
    assert runs[0] == runs[1]
    other = Trainer(Config(algo="maml", seed=8, **SMALL)).step()
    assert other["returns/pre_adaptation"] != runs[0][0]["returns/pre_adaptation"]


def test_evaluation_does_not_disturb_training_streams():
    a, b = Trainer(Config(seed=3, **SMALL)), Trainer(Config(seed=3, **SMALL))
    a.evaluate()
    assert a.step()["returns/post_adaptation"] == b.step()["returns/post_adaptation"]


@pytest.mark.parametrize("algo, estimator", [("anil", "reinforce"), ("maml", "reinforce"), ("anil", "dice")])
def test_meta_training_improves_post_adaptation_return_on_nav2d(algo, estimator):
    trainer = Trainer(Config(algo=algo, seed=0, estimator=estimator, **SMALL))
    start = trainer.evaluate()
    for _ in range(12):
        metrics = trainer.step()
        assert metrics["trpo/kl"] <= trainer.cfg.max_kl
    end = trainer.evaluate()
    # Held-out tasks: after meta-training, one adaptation step helps, and it lands far above where it started.
    assert end["return_step_1"] > start["return_step_1"] + 30, (start, end)
    assert end["return_step_1"] > end["return_step_0"] + 8, end


def test_unknown_env_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task family 'cheetah-direction'.*cheetah-dir"):
        Trainer(Config(env="cheetah-direction"))


@pytest.mark.parametrize("kwargs, key", [({"algo": "reptile"}, "algo"), ({"inner_lr": 0.0}, "inner_lr"),
                                         ({"inner_lr": -0.1}, "inner_lr"), ({"meta_batch_size": 0}, "meta_batch_size")])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        Config(**kwargs)


def test_unknown_config_key_is_named():
    from metarl.config import load_config
    with pytest.raises(ConfigError, match="inner_rl.*inner_lr"):
        load_config(overrides={"inner_rl": 0.1})


@pytest.mark.parametrize("frame_skip, dt", [(None, 0.05), (1, 0.01), (5, 0.05)])
def test_frame_skip_reaches_the_training_and_evaluation_envs(frame_skip, dt):
    trainer = Trainer(Config(env="cheetah-dir", frame_skip=frame_skip, meta_batch_size=2, episodes_per_task=1,
                             horizon=3, eval_tasks=3, eval_episodes_per_task=1, eval_steps=0, sampler_threads=1,
                             hidden_sizes=[8]))
    trainer.evaluate()
    samplers = list(trainer._samplers.values())  # the training batches' and the evaluation's (3 tasks)
    assert [s.env.dt for s in samplers] == [pytest.approx(dt)] * 2
    assert trainer.step()["env_steps"] == 2 * 1 * 3 * 2  # tasks x episodes x horizon x (inner + post batch)
    trainer.close()


def test_frame_skip_on_a_family_without_one_is_a_clear_error():
    with pytest.raises(ValueError, match="'nav2d' does not take frame_skip"):
        Trainer(Config(frame_skip=1, **SMALL))


@pytest.mark.parametrize("extra", [{}, {"estimator": "lvc"}, {"outer": "promp", "estimator": "dice"},
                                   {"inner_optimizer": "meta-sgd"}, {"inner_optimizer": "kfo", "algo": "maml"}])
def test_the_documented_metrics_are_exactly_what_a_step_and_an_evaluation_log(extra):
    from metarl.trainer import METRICS, evaluation_metrics, logged_metrics

    trainer = Trainer(Config(**{**SMALL, "meta_batch_size": 2, "episodes_per_task": 2, "eval_tasks": 2,
                                "eval_episodes_per_task": 2, "hidden_sizes": [8], **extra}))
    try:
        logged = {k for k in trainer.step() if "/" in k}  # what RunLog writes (keys with a '/')
        evaluated = {re.sub(r"_\d+", "_K", f"eval/{k}") for k in trainer.evaluate()}
    finally:
        trainer.close()
    assert logged == set(logged_metrics(trainer.cfg))
    assert {re.sub(r"^(meta-sgd|kfo)/[^/]+/", r"\1/PARAM/", k) for k in logged} < set(METRICS)
    assert evaluated == set(evaluation_metrics(trainer.cfg))


def test_evaluate_with_chosen_keys_and_step_sizes():
    from metarl.algorithm.policy import adapted_keys

    trainer = Trainer(Config(**{**SMALL, "algo": "maml", "meta_batch_size": 2, "episodes_per_task": 2,
                                "eval_tasks": 3, "eval_episodes_per_task": 3, "hidden_sizes": [8]}))
    try:
        own = trainer.evaluate(steps=1)
        same = trainer.evaluate(steps=1, keys=trainer.keys, lrs=[trainer.cfg.eval_first_lr])
        head = trainer.evaluate(steps=1, keys=adapted_keys(trainer.policy, "anil"))
        longer = trainer.evaluate(steps=1, lrs=[4 * trainer.cfg.eval_first_lr])
        with pytest.raises(ValueError, match="2 adaptation steps need 2 step sizes"):
            trainer.evaluate(steps=2, lrs=[0.1])
    finally:
        trainer.close()
    assert same == own  # the defaults are the algorithm's keys and the config's step sizes
    assert head["return_step_0"] == own["return_step_0"] == longer["return_step_0"]  # same tasks, seeds, noise
    assert head["return_step_1"] != own["return_step_1"] != longer["return_step_1"]


def test_device_setting_resolves_auto_and_refuses_a_missing_gpu():
    import torch

    from metarl.trainer import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cuda")
        return
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'cuda' needs a CUDA GPU"):
        resolve_device("cuda")
    tiny = dict(SMALL, meta_batch_size=2, episodes_per_task=2, horizon=10, eval_tasks=2, eval_episodes_per_task=2)
    a, b = Trainer(Config(device="cpu", **tiny)), Trainer(Config(device="auto", **tiny))
    assert {k: v for k, v in a.step().items() if not k.startswith("time/")} == \
        {k: v for k, v in b.step().items() if not k.startswith("time/")}


@pytest.mark.parametrize("native", [True, False])
def test_fvp_precision_auto_takes_bfloat16_only_where_the_cpu_multiplies_in_it(monkeypatch, native):
    """'auto' must never be a trap: on a CPU without bfloat16 units (emulated products, slower than float32's) it is
    float32. The update receives the resolved precision; explicit settings pass through unchanged."""
    import torch

    import metarl.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "_cpu_has_bfloat16_units", lambda: native)
    seen = []
    real = trainer_module.trpo_step
    monkeypatch.setattr(trainer_module, "trpo_step", lambda *a, **kw: seen.append(kw["fvp_precision"]) or real(*a, **kw))
    trainer = Trainer(Config(seed=0, fvp_precision="auto", **{**SMALL, "meta_batch_size": 2, "episodes_per_task": 2}))
    trainer.step()
    assert seen == ["bfloat16" if native else "float32"]
    cpu = torch.device("cpu")
    assert [trainer_module.resolve_fvp_precision(name, cpu) for name in ("float32", "bfloat16")] == ["float32",
                                                                                                  "bfloat16"]
    with pytest.raises(ConfigError, match="fvp_precision"):
        Config(fvp_precision="float16")
