"""Tests of the studies in benchmarks/studies/: each measures what its docstring says, on committed or tiny runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "benchmarks" / "studies"
GRID_RUNS = REPO / "benchmarks" / "results" / "grid" / "runs"


def _import_benchmark(name: str):
    sys.path.insert(0, str(STUDIES))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(STUDIES))


def test_nav2d_unit_action_variant_scales_actions_by_a_tenth_and_keeps_the_contract():
    np_ = _import_benchmark("nav2d_protocols")

    from metarl.envs import Nav2DTask, check_family
    check_family(np_.UnitActionNavigation2DEnv, "nav2d-unit-actions")
    task = Nav2DTask((0.3, -0.2))
    env = np_.UnitActionNavigation2DEnv()
    env.reset(options={"task": task})
    obs, reward, *_ = env.step(np.array([0.5, -3.0]))  # 0.1 * clip(action, -1, 1)
    np.testing.assert_allclose(obs, [0.05, -0.1], atol=1e-7)
    assert np.isclose(reward, -np.hypot(0.05 - 0.3, -0.1 + 0.2), rtol=1e-12)
    batch = np_.UnitActionNavigation2DBatch(2)
    batch.set_attr("task", [task, task])
    batch.reset(seed=0)
    obs, rewards, *_ = batch.step(np.array([[0.5, -3.0], [-1.0, 1.0]]))
    np.testing.assert_allclose(obs, [[0.05, -0.1], [-0.1, 0.1]], atol=1e-7)
    assert batch.single_action_space.high.tolist() == [1.0, 1.0] and np.isclose(rewards[0], reward, rtol=1e-12)


def test_cheetah_variants_scale_actions_and_observe_x_as_documented():
    from metarl.envs import CheetahDirTask, HalfCheetahBatch, HalfCheetahDirEnv, check_family
    cp = _import_benchmark("cheetah_protocols")
    check_family(cp.ScaledHalfCheetahDirEnv, cp.SCALED_ENV)
    check_family(cp.XPositionHalfCheetahDirEnv, cp.XPOS_ENV)
    tasks = [CheetahDirTask(1.0), CheetahDirTask(-1.0)]
    actions = np.array([[3.0, -4.0, 15.0, -20.0, 0.5, 9.0], [-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]])
    base, scaled = HalfCheetahBatch(HalfCheetahDirEnv, 2), cp.ScaledHalfCheetahBatch(2)
    xpos = cp.XPositionHalfCheetahBatch(2)
    for env in (base, scaled, xpos):
        env.set_attr("task", tasks)
        env.reset(seed=3)
    # the scaled env is the base env fed action / 10, clipped to [-1, 1]
    obs_b, rew_b, *_ = base.step(np.clip(actions / 10.0, -1.0, 1.0))
    obs_s, rew_s, *_ = scaled.step(actions)
    np.testing.assert_array_equal(obs_s, obs_b)
    np.testing.assert_array_equal(rew_s, rew_b)
    assert scaled.single_action_space.high.tolist() == [10.0] * 6
    # the x-position env observes qpos (x first) then qvel: the base observation with x in front
    obs_x, rew_x, *_ = xpos.step(np.clip(actions / 10.0, -1.0, 1.0))
    assert obs_x.shape == (2, 18) and xpos.single_observation_space.shape == (18,)
    np.testing.assert_array_equal(obs_x[:, 1:], obs_b)
    np.testing.assert_array_equal(obs_x[:, 0], xpos.qpos[:, 0])
    np.testing.assert_array_equal(rew_x, rew_b)
    # the single env agrees with its batched form on the first step (same seed, same draws)
    single = cp.XPositionHalfCheetahDirEnv()
    single.reset(seed=3, options={"task": tasks[0]})
    obs_1, *_ = single.step(np.clip(actions[0] / 10.0, -1.0, 1.0).astype(np.float32))
    np.testing.assert_allclose(obs_1, obs_x[0], atol=1e-6)
    for env in (base, scaled, xpos):
        env.close()
    # forward-only: every task is +1, and the generator is left where the family's own draws leave it
    rng_f, rng_d = np.random.default_rng(5), np.random.default_rng(5)
    assert cp.ForwardOnlyHalfCheetahDirEnv().sample_tasks(rng_f, 7) == [CheetahDirTask(1.0)] * 7
    assert {t.direction for t in HalfCheetahDirEnv().sample_tasks(rng_d, 7)} == {-1.0, 1.0}
    assert rng_f.random() == rng_d.random()


def test_stale_baseline_predicts_each_task_with_the_previous_tasks_fit():
    import torch

    from metarl.algorithm.advantages import (
        baseline_features,
        discounted_returns,
        fit_linear_baseline,
        gae,
        linear_baseline_values,
        normalize,
    )
    from metarl.config import load_config
    from metarl.sampling.sampler import Episodes
    cp = _import_benchmark("cheetah_protocols")
    cfg = load_config(REPO / "configs" / "cheetah-dir.yaml", {})
    trainer = object.__new__(cp.StaleBaselineTrainer)  # only batch is under test: no envs needed
    trainer.cfg, trainer._pooled = cfg, None
    gen = torch.Generator().manual_seed(0)

    def episodes():  # 3 tasks x 6 steps x 4 episodes, the last episode of task 1 ending after 4 steps
        mask = torch.ones(3, 6, 4)
        mask[1, 4:, 3] = 0.0
        return Episodes(torch.randn(3, 6, 4, 2, generator=gen), torch.randn(3, 6, 4, 1, generator=gen),
                        torch.randn(3, 6, 4, generator=gen) * mask, mask)

    def expected(ep, weights):  # advantages of every task under the given (K, F) baseline weights
        values = linear_baseline_values(baseline_features(ep.observations, ep.mask), weights)
        return normalize(gae(ep.rewards, values, ep.mask, cfg.gamma, cfg.gae_lambda), ep.mask)

    def own_fits(ep):
        feats = baseline_features(ep.observations, ep.mask)
        return fit_linear_baseline(feats, discounted_returns(ep.rewards, ep.mask, cfg.gamma), ep.mask)

    first, second = episodes(), episodes()
    w1 = own_fits(first)
    adv = trainer.batch(first).advantages
    # task 0: rllab's baseline before any fit predicts 0; task k: the fit on task k-1
    torch.testing.assert_close(adv, expected(first, torch.stack([torch.zeros_like(w1[0]), w1[0], w1[1]])))
    assert not torch.allclose(adv, expected(first, w1))  # not our own per-task fit
    # the next batch's first task predicts with the fit on all of the previous batch's episodes, pooled
    flat = Episodes(*(x.transpose(0, 1).reshape(1, 6, 12, *x.shape[3:]) for x in
                      (first.observations, first.actions, first.rewards, first.mask)))
    pooled = own_fits(flat)[0]
    w2 = own_fits(second)
    torch.testing.assert_close(trainer.batch(second).advantages,
                               expected(second, torch.stack([pooled, w2[0], w2[1]])))


def test_head_log_std_variant_adapts_the_head_and_the_log_std_and_nothing_else():
    import torch

    from metarl.config import load_config
    cp = _import_benchmark("cheetah_protocols")
    cfg = load_config(REPO / "configs" / "cheetah-dir.yaml",
                      {"meta_batch_size": 2, "episodes_per_task": 2, "horizon": 10, "sampler_threads": 1})
    trainer = cp.HeadAndLogStdTrainer(cfg)
    try:
        assert sorted(trainer.keys) == ["head.bias", "head.weight", "log_std"]
        params = trainer.meta_parameters()
        tasks = trainer.sample_tasks(2, trainer.rng)
        episodes, _ = trainer.collect(params, tasks, 0)
        adapted = trainer.adapt(params, trainer.batch(episodes), 0.1)
        changed = {k for k in params if not torch.equal(adapted[k], params[k].expand_as(adapted[k]))}
        assert changed == {"head.bias", "head.weight", "log_std"}
    finally:
        trainer.close()


def test_cheetah_protocols_runs_each_variant_at_its_frame_skip_and_resumes(tmp_path, capsys):
    out = tmp_path / "protocols"
    args = ["--variants", "ours", "frame-skip-1", "stale-baseline", "--iterations", "1", "--tasks", "1",
            "--episodes", "1", "--eval-tasks", "1", "--out", str(out)]
    cp = _import_benchmark("cheetah_protocols")
    cp.main(args)  # in this process: the script's own entry point
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert runs["anil/ours"]["overrides"]["frame_skip"] == 5
    assert runs["anil/frame-skip-1"]["overrides"]["frame_skip"] == 1
    assert runs["anil/stale-baseline"]["overrides"]["frame_skip"] == 1
    assert len(runs["anil/frame-skip-1"]["post_adaptation"]) == 1
    table = out.with_suffix(".md").read_text()
    assert "| anil | ours | 5 |" in table and "| anil | frame-skip-1 | 1 |" in table
    capsys.readouterr()
    cp.main(args)  # again: all kept, none retrained
    assert capsys.readouterr().out.count("done (kept from") == 3


def test_inner_step_size_reports_kl_and_shift_for_a_published_run(tmp_path):
    run = GRID_RUNS / "nav2d-anil-seed0"
    out = tmp_path / "step"
    proc = subprocess.run([sys.executable, str(STUDIES / "inner_step_size.py"), "--runs", str(run),
                           "--tasks", "2", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())["runs"]["nav2d-anil-seed0"]
    for lr in ("0.1", "0.5", "1.0"):
        kl, shift = result["steps"][lr]["kl"], result["steps"][lr]["mean_shift_in_std"]
        assert len(kl) == 2 and all(k >= 0 for k in kl) and all(s >= 0 for s in shift)
        assert len(result["steps"][lr]["return_after"]) == 2
    # KL of a mean shift grows with the square of the step size (log-std is not adapted by ANIL)
    ratio = np.array(result["steps"]["1.0"]["kl"]) / np.array(result["steps"]["0.1"]["kl"])
    np.testing.assert_allclose(ratio, 100.0, rtol=1e-3)
    assert "| nav2d-anil-seed0 |" in out.with_suffix(".md").read_text()


def test_adaptation_step_sizes_matches_metarl_eval_at_the_protocol_step(tmp_path):
    from metarl.runs import evaluate_run

    run = GRID_RUNS / "nav2d-anil-seed0"
    out = tmp_path / "sizes"
    proc = subprocess.run([sys.executable, str(STUDIES / "adaptation_step_sizes.py"), "--runs", str(run),
                           "--lrs", "0.1", "0.4", "--tasks", "3", "--episodes", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())["runs"]["runs/nav2d-anil-seed0"]
    reference = evaluate_run(run, tasks=3, steps=1, episodes=4, out=tmp_path / "eval.json").data
    # At the protocol's step size it is exactly `metarl eval`: same tasks, episodes and noise.
    assert result["return_step_0"] == pytest.approx(reference["returns"]["return_step_0"], abs=1e-6)
    assert result["lrs"]["0.1"]["return_step_1"] == pytest.approx(reference["returns"]["return_step_1"], abs=1e-6)
    assert result["lrs"]["0.1"]["per_task"] == pytest.approx([t["returns"][1] for t in reference["per_task"]])
    assert result["lrs"]["0.4"]["return_step_1"] != result["lrs"]["0.1"]["return_step_1"]
    assert np.isfinite(result["head_input_sq_norm"]) and result["head_input_sq_norm"] > 0
    assert -1.0 <= result["gradient_agreement"] <= 1.0
    assert "| runs/nav2d-anil-seed0 | " in out.with_suffix(".md").read_text()
    bad = subprocess.run([sys.executable, str(STUDIES / "adaptation_step_sizes.py"), "--runs", str(run),
                          "--lrs", "0", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--lrs must be positive, got [0.0]" in bad.stderr


def test_gradient_agreement_is_one_for_the_same_batch_and_below_one_for_independent_batches():
    from metarl.runs import load_trainer

    sizes = _import_benchmark("adaptation_step_sizes")
    trainer = load_trainer(GRID_RUNS / "nav2d-anil-seed0")
    try:
        same = sizes.gradient_agreement(trainer, tasks=3, episodes=4, seeds=(7, 7, 7))
        independent = sizes.gradient_agreement(trainer, tasks=3, episodes=4, seeds=(7, 8, 9))
        with pytest.raises(ValueError, match=r"at least two seeds to compare batches, got \(7,\)"):
            sizes.gradient_agreement(trainer, tasks=3, episodes=4, seeds=(7,))
    finally:
        trainer.close()
    # The same seed reproduces the batch, so each task's gradients coincide; fresh episodes move them.
    assert same == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert len(independent) == 3 and all(-1.0 <= c < 0.999 for c in independent)


def test_adapt_head_on_a_maml_checkpoint_is_anils_step_from_the_same_parameters(tmp_path):
    import shutil

    sizes = _import_benchmark("adaptation_step_sizes")
    maml = GRID_RUNS / "nav2d-maml-seed0"
    as_anil = tmp_path / "nav2d-maml-seed0-as-anil"  # the same checkpoint under a config that says ANIL
    shutil.copytree(maml, as_anil)
    config = as_anil / "config.yaml"
    config.write_text(config.read_text().replace("algo: maml", "algo: anil", 1))

    def measure(run, adapt="run"):
        return sizes.measure(run, [0.1], tasks=3, episodes=4, adapt=adapt)

    head, anil = measure(maml, "head"), measure(as_anil)
    assert (head["adapt"], anil["adapt"], anil["algo"]) == ("head", "head", "anil")
    assert head["lrs"]["0.1"]["per_task"] == pytest.approx(anil["lrs"]["0.1"]["per_task"], abs=1e-6)
    assert head["gradient_agreement"] == pytest.approx(anil["gradient_agreement"], abs=1e-6)
    own, whole = measure(maml), measure(maml, "all")
    assert own["adapt"] == whole["adapt"] == "all"
    assert own["lrs"]["0.1"]["per_task"] == pytest.approx(whole["lrs"]["0.1"]["per_task"], abs=1e-6)
    # a step on the head alone is another step: the returns after it differ
    assert head["lrs"]["0.1"]["per_task"] != pytest.approx(own["lrs"]["0.1"]["per_task"], abs=1e-3)


def test_run_figures_recomputes_windows_sittings_and_per_task_groups_from_a_fake_run(tmp_path):
    run_figures = _import_benchmark("run_figures")
    run = tmp_path / "fake-run"
    run.mkdir()
    metrics = []
    for it in range(1, 31):  # training return = iteration, grad norm = iteration / 10, 1 s/it then 3 s/it
        metrics.append({"iteration": it, "returns/post_adaptation": float(it), "trpo/grad_norm": it / 10,
                        "time/iteration_s": 1.0 if it <= 12 else 3.0, "trpo/line_search_steps": 1 + (it > 20),
                        "trpo/step_accepted": 1.0, "trpo/kl": 0.01 if it > 20 else 0.004})
        if it % 10 == 0:  # evaluations are logged as their own lines, as the trainer does
            metrics.append({"iteration": it, "eval/return_step_0": -it, "eval/return_step_0_std": 1.0,
                            "eval/return_step_1": it, "eval/return_step_1_std": 1.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    # The first sitting records to_iteration 0 (as runs killed before the heartbeat did); its end comes from the next.
    (run / "timing.json").write_text(json.dumps({"wall_s": 7200.0, "sittings": [
        {"from_iteration": 0, "to_iteration": 0}, {"from_iteration": 12, "to_iteration": 30}]}))
    per_task = ([{"task": {"direction": 1.0}, "returns": [0.0, r]} for r in (10.0, 30.0)]
                + [{"task": {"direction": -1.0}, "returns": [0.0, r]} for r in (-5.0, 5.0, 15.0)])
    (run / "eval.json").write_text(json.dumps({"per_task": per_task}))

    metrics = run_figures.read_metrics(run)
    assert run_figures.held_out_by_iteration(metrics) == [(10, [-10, 10]), (20, [-20, 20]), (30, [-30, 30])]
    w = run_figures.window_means(metrics, "returns/post_adaptation", 10)
    assert w["first"] == pytest.approx(5.5) and w["last"] == pytest.approx(25.5)
    assert (w["best"], w["best_from"], w["best_to"]) == (pytest.approx(25.5), 21, 30)
    assert run_figures.window_means(metrics, "trpo/grad_norm", 10)["last"] == pytest.approx(2.55)
    assert run_figures.window_means(metrics, "trpo/grad_norm", 31) == {}
    assert run_figures.seconds_by_sitting(metrics, json.loads((run / "timing.json").read_text())) == [
        (1, 12, 1.0), (13, 30, 3.0)]
    groups = dict(run_figures.per_task_groups(json.loads((run / "eval.json").read_text())))
    forward, backward = groups['{"direction": 1.0}'], groups['{"direction": -1.0}']
    assert forward[:, 1].mean() == 20.0 and forward[:, 1].std() == 10.0  # population std, as the README quotes
    assert backward[:, 1].tolist() == [-5.0, 5.0, 15.0]

    text = run_figures.report(run, [10])
    assert "30 training iterations logged, last 30" in text
    assert "first 5.50, last 25.50, best 25.50 (iterations 21-30)" in text
    assert "iterations 13-30: 3.0 s/iteration" in text and "wall-clock time in all: 2.00 h" in text
    assert "TRPO: 30 of 30 steps accepted; line-search trials 1: 20, 2: 10; mean KL 0.0060" in text
    assert "  < 0          0         1" in text  # one backward task below zero after one step
    with pytest.raises(SystemExit):
        run_figures.main([str(tmp_path / "missing")])


def test_trpo_step_kl_measures_the_quadratic_models_prediction_and_restores_the_line_search(tmp_path):
    import metarl.algorithm.metalearner as metalearner

    trpo_step_kl = _import_benchmark("trpo_step_kl")
    real = metalearner.backtracking_line_search
    run = GRID_RUNS / "nav2d-anil-seed0"
    out = tmp_path / "kl"
    trpo_step_kl.main(["--runs", str(run), "--fractions", "1.0", "0.1", "--out", str(out)])
    assert metalearner.backtracking_line_search is real
    result = json.loads(out.with_suffix(".json").read_text())["runs"]["runs/nav2d-anil-seed0"]
    assert result["kl_before"] == pytest.approx(0.0, abs=1e-7) and result["max_kl"] == 0.01
    # ANIL's adapted head is smooth in the meta-parameters: the model 0.5 s^T F s holds along the whole step
    for f in ("1.0", "0.1"):
        assert 0.8 < result["fractions"][f]["kl_over_model"] < 1.25, result["fractions"][f]
        assert result["fractions"][f]["loss_change"] < 0  # the step's direction improves the surrogate
    assert result["accepted_fraction"] in [pytest.approx(0.8 ** k) for k in range(15)]
    assert "| runs/nav2d-anil-seed0 | 500 |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        trpo_step_kl.main(["--runs", str(run), "--fractions", "0", "--out", str(out)])


def test_trpo_step_kl_smooth_activation_replaces_every_relu_and_keeps_the_weights():
    import torch

    from metarl.algorithm.policy import GaussianMLP
    trpo_step_kl = _import_benchmark("trpo_step_kl")
    policy = GaussianMLP(3, 2, hidden_sizes=(4, 5), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    obs = torch.linspace(-2, 2, 12).reshape(4, 3)
    relu_mean = policy(obs)[0]
    trpo_step_kl.smooth_body(policy, "softplus")
    assert [type(m).__name__ for m in policy.body] == ["Linear", "Softplus", "Linear", "Softplus"]
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())
    # the same weights through softplus: the mean the layers compute by hand with log(1 + e^x)
    h = obs
    for layer in (policy.body[0], policy.body[2]):
        h = torch.log1p(torch.exp(layer(h)))
    torch.testing.assert_close(policy(obs)[0], policy.head(h))
    assert not torch.allclose(policy(obs)[0], relu_mean)


def test_estimators_study_trains_each_variant_as_a_resumable_run_and_skips_finished_ones(tmp_path):
    study = _import_benchmark("estimators")
    args = ["--algos", "anil", "--variants", "promp-lvc", "--iterations", "2", "--eval-every", "1", "--tasks", "2",
            "--episodes", "1", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "est")]
    study.main(args)
    run_dir = tmp_path / "runs" / "cheetah-dir-anil-promp-lvc-seed0"
    from metarl.config import load_config
    cfg = load_config(run_dir / "config.yaml")
    assert (cfg.outer, cfg.estimator, cfg.iterations) == ("promp", "lvc", 2)
    metrics = (run_dir / "metrics.jsonl").read_text()
    study.main(args)  # finished: left as it is
    assert (run_dir / "metrics.jsonl").read_text() == metrics
    from metarl.runs import prepare_resume, train
    train(*prepare_resume(run_dir, 3))  # extended beyond the study's length: still left as it is, and reported
    extended = (run_dir / "metrics.jsonl").read_text()
    study.main(args)
    assert (run_dir / "metrics.jsonl").read_text() == extended
    study.main([*args, "--variants", "promp-lvc", "lvc", "--no-train"])  # reports what exists, trains nothing
    assert not (tmp_path / "runs" / "cheetah-dir-anil-lvc-seed0").exists()
    assert "| ANIL | promp-lvc |" in (tmp_path / "est.md").read_text()
    result = json.loads((tmp_path / "est.json").read_text())
    assert set(result["algos"]["anil"]["promp-lvc"]["eval_return_step_1"]) == {"1", "2", "3"}
    assert (tmp_path / "est.png").stat().st_size > 0


def test_feature_reuse_aggregates_the_analyses_of_published_runs_and_skips_finished_ones(tmp_path):
    study = _import_benchmark("feature_reuse")
    out = tmp_path / "fr" / "feature_reuse"
    args = ["--runs", "nav2d-anil-seed0", "nav2d-maml-seed0", "--tasks", "2", "--episodes", "2", "--out", str(out)]
    study.main(args)
    result = json.loads(out.with_suffix(".json").read_text())
    anil, maml = result["cells"]["nav2d"]["anil"], result["cells"]["nav2d"]["maml"]
    assert anil["body_cka_min"] == pytest.approx(1.0, abs=1e-9)  # ANIL's body never moves
    assert maml["body_cka_min"] < 1.0
    per_run = json.loads((out / "nav2d-maml-seed0" / "analysis.json").read_text())
    assert maml["cka"]["hidden 2"][0]["mean"] == per_run["similarity"]["cka"]["hidden 2"][0]
    assert maml["freezing"]["all"][1]["mean"] == per_run["freezing"]["all"]["returns"][1]
    md = out.with_suffix(".md").read_text()
    assert "- nav2d ANIL: the body is frozen by construction" in md and "| nav2d | MAML | linear CKA |" in md
    for name in study.FIGURES.values():
        assert (out.parent / name).stat().st_size > 1000
    stamp = (out / "nav2d-anil-seed0" / "analysis.json").stat().st_mtime_ns
    study.main(args)  # finished analyses are read, not recomputed
    assert (out / "nav2d-anil-seed0" / "analysis.json").stat().st_mtime_ns == stamp


def test_depth_study_trains_each_variant_evaluates_it_once_and_resumes(tmp_path):
    study = _import_benchmark("depth")
    args = ["--envs", "nav2d", "--variants", "depth4", "depth1-kfo", "--iterations", "1", "--tasks", "2",
            "--episodes", "2", "--runs", str(tmp_path / "runs"), "--published", str(tmp_path / "published"),
            "--out", str(tmp_path / "depth")]
    study.main(args)
    from metarl.config import load_config
    kfo = tmp_path / "runs" / "nav2d-maml-depth1-kfo-seed0"
    cfg = load_config(kfo / "config.yaml")
    assert (cfg.algo, cfg.hidden_sizes, cfg.inner_optimizer) == ("maml", [100], "kfo")
    assert load_config(tmp_path / "runs" / "nav2d-maml-depth4-seed0" / "config.yaml").hidden_sizes == [100] * 4
    evaluation = json.loads((kfo / "eval.json").read_text())
    result = json.loads((tmp_path / "depth.json").read_text())
    assert result["envs"]["nav2d"]["depth1-kfo"]["mean"] == [evaluation["returns"][f"return_step_{k}"]
                                                             for k in range(4)]
    table = (tmp_path / "depth.md").read_text()
    assert "| nav2d | depth4 | 1 |" in table and "(1 seed)" in table and "± 0.0" not in table
    # the generated answers: one seed per row, so nothing is judged yet, and the sentence says so
    assert "the one-layer policy's learned inner rule: depth1-kfo" in table and "not judged (one seed)" in table
    published = tmp_path / "published" / kfo.name
    assert sorted(p.name for p in published.iterdir()) == sorted(["checkpoint.pt", "config.yaml", "metrics.jsonl.gz",
                                                                  "eval.json", "setup.json"])
    assert (published / "eval.json").read_bytes() == (kfo / "eval.json").read_bytes()
    before = [(kfo / name).read_bytes() for name in ("metrics.jsonl", "eval.json")]
    study.main(args)  # finished and evaluated: left as it is
    assert [(kfo / name).read_bytes() for name in ("metrics.jsonl", "eval.json")] == before
    # A later sitting on a machine that kept nothing but git: the published runs make the table, none is retrained.
    import shutil
    shutil.rmtree(tmp_path / "runs")
    study.main(args)
    assert not (tmp_path / "runs").exists()
    assert json.loads((tmp_path / "depth.json").read_text())["envs"] == result["envs"]


@pytest.mark.parametrize("env", ["nav2d", "cheetah-vel", "cheetah-dir"])
def test_depth_variants_train_the_inner_rule_and_depth_they_name_on_every_family(env):
    from metarl.config import load_config
    from metarl.runs import preset_path

    study = _import_benchmark("depth")
    for name, overrides in study.VARIANTS.items():
        cfg = load_config(preset_path(env), overrides)  # cheetah-dir's preset learns its step sizes (Meta-SGD)
        rule = name.partition("-")[2] or "sgd"
        assert cfg.inner_optimizer == rule, (env, name)
        assert len(cfg.hidden_sizes) == int(name[len("depth")]) and set(cfg.hidden_sizes) == {100}, (env, name)


def test_cheetah_dir_candidates_continues_a_copy_of_the_published_run_and_reports_it(tmp_path, monkeypatch):
    study = _import_benchmark("cheetah_dir_candidates")
    from metarl.config import load_config
    from metarl.runs import create_run, evaluate_run, preset_path, train
    from metarl.runs.metrics import packed_record
    # a tiny stand-in for the grid's published ProMP + LVC seed 0 (one iteration, two tasks, two episodes)
    grid = tmp_path / "grid"
    tiny = {"algo": "anil", "seed": 0, **study.CHOSEN, "iterations": 1, "meta_batch_size": 2,
            "episodes_per_task": 2, "eval_tasks": 2, "eval_episodes_per_task": 2, "horizon": 20, "eval_every": 1,
            "promp_steps": 1}
    cfg = load_config(preset_path("cheetah-dir"), tiny)
    chosen = grid / "cheetah-dir-anil-sgd-nokl-seed0"  # the grid's ProMP + LVC row, the candidates' base
    train(create_run(cfg, chosen), cfg)
    evaluate_run(chosen, steps=3)
    monkeypatch.setattr(study, "GRID", grid)
    args = ["--candidates", "800-iterations", "--continue-to", "3", "--runs", str(tmp_path / "runs"),
            "--published", str(tmp_path / "published"), "--out", str(tmp_path / "cand")]
    study.main(args)
    run_dir = tmp_path / "runs" / "cheetah-dir-anil-promp-lvc-800-iterations-seed0"
    assert load_config(run_dir / "config.yaml").iterations == 3
    assert load_config(chosen / "config.yaml").iterations == 1  # the published run is copied, never changed
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["iteration"] == 3 and evaluation["steps"] == 3
    row = json.loads((tmp_path / "cand.json").read_text())["algos"]["anil"]["800-iterations"]
    assert row["iterations"] == 3 and row["returns"] == [evaluation["returns"][f"return_step_{k}"] for k in range(4)]
    held_out = {m["iteration"]: packed_record(m["eval/return_step_1"])  # read from the published copy
                for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                if "eval/return_step_1" in m}
    curve = {**held_out, 3: evaluation["returns"]["return_step_1"]}
    assert row["curve"] == {str(k): v for k, v in curve.items()} and row["peak"] == max(curve.values())
    assert len([m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                if "time/iteration_s" in m and m["iteration"] > 1]) == 2  # its own iterations time the row
    text = (tmp_path / "cand.md").read_text()
    assert "| ANIL | chosen: ProMP + LVC (published) |" in text
    assert "`metarl train --resume RUN --iterations 800`" in text
    waiting = next(line for line in text.splitlines() if line.startswith("Not screened yet"))
    assert "kfo (`metarl train --env cheetah-dir --algo anil --seed 0 --set inner_optimizer=kfo" in waiting
    assert "800-iterations" not in waiting  # the one published is a row, not a name still waiting
    import shutil
    shutil.rmtree(tmp_path / "runs")  # a later sitting that kept only git reports the published copy, trains nothing
    study.main(args)
    assert not (tmp_path / "runs").exists()
    again = json.loads((tmp_path / "cand.json").read_text())["algos"]["anil"]["800-iterations"]
    assert again["returns"] == row["returns"]


def test_cheetah_dir_candidates_judges_a_three_seed_row_against_issue_52s_targets(tmp_path, monkeypatch):
    study = _import_benchmark("cheetah_dir_candidates")
    from metarl.config import load_config, save_config
    from metarl.runs import preset_path

    grid = tmp_path / "grid"
    for name, overrides in (("cheetah-dir-anil-seed{}", {}), ("cheetah-dir-anil-paper-seed{}", {}),
                            ("cheetah-dir-anil-sgd-nokl-seed{}", {"inner_optimizer": "sgd", "promp_max_kl": None})):
        for seed in (0, 1, 2):
            (grid / name.format(seed)).mkdir(parents=True)
            save_config(load_config(preset_path("cheetah-dir"), {"seed": seed, **overrides}),
                        grid / name.format(seed) / "config.yaml")
    variants = study.grid_variants("anil", grid)
    assert list(variants) == ["", "sgd-nokl"] and sorted(variants[""]) == [0, 1, 2]  # the papers' left out

    def row(one, two, three, end_over_peak=1.0, finished=True):
        return {"returns": [-50.0, one, two, three], "end_over_peak": end_over_peak, "finished": finished,
                "iterations": 500 if finished else 300, "of": 500, "peak": one, "peak_iteration": 500}

    seeds = {0: row(400.0, 420.0, 430.0), 1: row(380.0, 400.0, 410.0), 2: row(370.0, 390.0, 400.0, 0.95)}
    monkeypatch.setattr(study, "summary", lambda path: seeds[int(path.name[-1])])
    judged = study.three_seed_row("anil", variants["sgd-nokl"])
    assert judged["command"] == ("metarl sweep --envs cheetah-dir --algos anil --seeds 0 1 2 "
                                 "--set inner_optimizer=sgd promp_max_kl=null")
    assert judged["mean"][1] == pytest.approx(383.33333) and judged["std"][1] == pytest.approx(12.47219, rel=1e-5)
    assert judged["lowest_end_over_peak"] == 0.95 and judged["targets_met"] is True
    assert judged["missed"] == []
    seeds[2] = row(370.0, 390.0, 400.0, 0.89)  # one seed falls below 90% of its peak
    fell = study.three_seed_row("anil", variants["sgd-nokl"])
    assert fell["targets_met"] is False and fell["missed"] == ["a seed ends below 0.90 of its peak (0.89)"]
    seeds[2] = row(250.0, 390.0, 400.0)  # the mean after one step below 363.2, and a wide spread
    low = study.three_seed_row("anil", variants["sgd-nokl"])
    assert low["targets_met"] is False
    assert low["missed"] == ["mean after 1 step 343.3 < 363.2", "std after 1 step 66.50 > 52.0"]
    text = study.three_seed_markdown({"three_seeds": {"anil": {"sgd-nokl": low}}, "command": "c", "date": "d"})
    assert "| **not met**: mean after 1 step 343.3 < 363.2; std after 1 step 66.50 > 52.0 |" in text
    seeds[2] = row(370.0, 390.0, 400.0, finished=False)  # judged only once every seed has finished
    unfinished = study.three_seed_row("anil", variants["sgd-nokl"])
    assert unfinished["targets_met"] is None and unfinished["finished_seeds"] == 2
    text = study.three_seed_markdown({"three_seeds": {"anil": {"sgd-nokl": unfinished}}, "command": "c",
                                      "date": "d"})
    assert "| iteration 300 of 500 |" in text and "| 2 of 3 seeds finished |" in text
    # two finished seeds further apart than any third seed can bring within the spread target: said before the end
    seeds[1] = row(280.0, 400.0, 410.0)
    apart = study.three_seed_row("anil", variants["sgd-nokl"])
    assert apart["std_floor"] == pytest.approx(60.0 * (2 / 3) ** 0.5)  # a third seed at their mean, 340
    text = study.three_seed_markdown({"three_seeds": {"anil": {"sgd-nokl": apart}}, "command": "c", "date": "d"})
    assert "| 2 of 3 seeds finished |" in text and "out of reach" not in text  # 48.99 is within 52.0: not said
    seeds[1] = row(300.0, 400.0, 410.0)
    seeds[0] = row(440.0, 420.0, 430.0)
    text = study.three_seed_markdown({"three_seeds": {"anil": {"sgd-nokl": study.three_seed_row(
        "anil", variants["sgd-nokl"])}}, "command": "c", "date": "d"})
    assert "| 2 of 3 seeds finished; std after 1 step out of reach: at least 57.15 whatever the others end at " \
        "(> 52.0) |" in text


def test_fisher_precision_trains_one_bfloat16_change_and_compares_it_with_the_grids_float32_seeds(tmp_path,
                                                                                                 monkeypatch):
    study = _import_benchmark("fisher_precision")
    import statistics

    from metarl.config import load_config
    from metarl.runs import preset_path
    real = study.run_variant
    tiny = {"iterations": 1, "meta_batch_size": 2, "episodes_per_task": 2, "eval_tasks": 2, "eval_episodes_per_task": 2,
            "horizon": 20, "eval_every": 1}
    monkeypatch.setattr(study, "run_variant", lambda run_dir, env, overrides: real(run_dir, env, {**overrides, **tiny}))
    args = ["--runs", str(tmp_path / "runs"), "--published", str(tmp_path / "published"), "--out", str(tmp_path / "fp")]
    study.main(args)
    run_dir = tmp_path / "published" / "cheetah-dir-anil-bf16-fisher-seed0"
    cfg = load_config(run_dir / "config.yaml")
    assert cfg.fvp_precision == "bfloat16"
    preset = load_config(preset_path("cheetah-dir-paper"), {"algo": "anil", "seed": 0, **tiny})
    assert {**vars(cfg), "fvp_precision": None} == {**vars(preset), "fvp_precision": None}  # the one change
    row = json.loads((tmp_path / "fp.json").read_text())["rows"][0]
    final = json.loads((run_dir / "eval.json").read_text())["returns"]
    assert row["returns"] == [final[f"return_step_{k}"] for k in range(4)]
    seeds = [json.loads((GRID_RUNS / f"cheetah-dir-anil-paper-seed{s}" / "eval.json").read_text())
             ["returns"]["return_step_1"] for s in range(3)]
    assert row["float32_seeds"] == 3
    assert row["float32_mean"][1] == pytest.approx(statistics.mean(seeds))
    assert row["float32_std"][1] == pytest.approx(statistics.stdev(seeds))
    assert row["within_spread"] == (abs(row["returns"][1] - statistics.mean(seeds)) <= statistics.stdev(seeds))
    assert row["float32_same_seed"]["returns"][1] == pytest.approx(seeds[0])  # seed 0 beside seed 0
    assert "bfloat16 (`metarl train --config cheetah-dir-paper --algo anil --seed 0 --set fvp_precision=bfloat16`)" in \
        (tmp_path / "fp.md").read_text()


def test_cheetah_dir_candidates_publishes_an_unfinished_run_and_resumes_it_from_the_published_copy(tmp_path):
    """A candidate that outlives a sitting is published as it stands ('iteration N of M') and the next sitting, which
    kept nothing but git, continues it from that copy to the end: the same run, each iteration trained once."""
    study = _import_benchmark("cheetah_dir_candidates")
    import shutil

    from metarl.config import load_config
    from metarl.runs import create_run, preset_path, read_metrics, train
    tiny = {"algo": "anil", "seed": 0, "meta_batch_size": 2, "episodes_per_task": 2, "eval_tasks": 2,
            "eval_episodes_per_task": 2, "horizon": 20, "eval_every": 1, "promp_steps": 1, "iterations": 4}
    cfg = load_config(preset_path("cheetah-dir"), {**tiny, **study.CANDIDATES["meta-sgd"]})
    run_dir = tmp_path / "runs" / "cheetah-dir-anil-promp-lvc-meta-sgd-seed0"
    train(create_run(cfg, run_dir), load_config(preset_path("cheetah-dir"), {**tiny, **study.CANDIDATES["meta-sgd"],
                                                                             "iterations": 2}))  # a sitting ends
    published = tmp_path / "published"
    args = ["--candidates", "meta-sgd", "--runs", str(tmp_path / "runs"), "--published", str(published),
            "--out", str(tmp_path / "cand")]
    study.main([*args, "--publish-unfinished"])
    copy = published / run_dir.name
    assert {p.name for p in copy.iterdir()} >= {"checkpoint.pt", "config.yaml", "metrics.jsonl.gz"}
    row = json.loads((tmp_path / "cand.json").read_text())["algos"]["anil"]["meta-sgd"]
    assert (row["iterations"], row["of"], row["finished"]) == (2, 4, False)
    last = [m for m in read_metrics(copy) if "eval/return_step_1" in m][-1]
    assert row["returns"] == [last[f"eval/return_step_{k}"] for k in range(4)]  # its latest evaluation
    text = (tmp_path / "cand.md").read_text()
    assert "| iteration 2 of 4 |" in text and "| not yet |" in text
    assert "`metarl train --env cheetah-dir --algo anil --seed 0 --set promp_max_kl=null`" in text  # today's preset
    shutil.rmtree(tmp_path / "runs")  # the next sitting: a fresh machine with git only
    study.main(args)
    row = json.loads((tmp_path / "cand.json").read_text())["algos"]["anil"]["meta-sgd"]
    assert (row["iterations"], row["of"], row["finished"]) == (4, 4, True)
    trained = [m["iteration"] for m in read_metrics(copy) if "returns/post_adaptation" in m]
    assert trained == [1, 2, 3, 4]
    assert json.loads((copy / "eval.json").read_text())["iteration"] == 4
    assert " of 4 |" not in (tmp_path / "cand.md").read_text() and "| 4 | " in (tmp_path / "cand.md").read_text()


def test_family_learning_checks_each_family_from_its_metrics_and_trains_a_published_run_no_more(tmp_path):
    study = _import_benchmark("family_learning")
    args = ["--families", "hopper-params", "--runs", str(tmp_path / "runs"), "--published", str(tmp_path / "pub"),
            "--out", str(tmp_path / "fl"), "--set", "meta_batch_size=2", "episodes_per_task=2", "iterations=2",
            "eval_tasks=2", "eval_episodes_per_task=2", "eval_every=2", "horizon=20"]
    study.main(args)
    run = tmp_path / "runs" / "hopper-params-anil-reduced-seed0"
    from metarl.config import load_config
    from metarl.runs import read_metrics
    cfg = load_config(run / "config.yaml")
    assert (cfg.env, cfg.algo, cfg.meta_batch_size, cfg.iterations, cfg.horizon) == ("hopper-params", "anil", 2, 2, 20)
    metrics = [m for m in read_metrics(run) if "returns/post_adaptation" in m]
    row = json.loads((tmp_path / "fl.json").read_text())["families"]["hopper-params"]
    assert row["start"] == pytest.approx(np.mean([m["returns/post_adaptation"] for m in metrics]))
    assert row["end_pre"] == pytest.approx(np.mean([m["returns/pre_adaptation"] for m in metrics]))
    assert row["learns"] == (row["end_post"] > row["end_pre"] and row["end_post"] > row["start"])
    evaluation = json.loads((run / "eval.json").read_text())
    assert row["held_out"] == [evaluation["returns"][f"return_step_{k}"] for k in range(4)]
    assert "| `hopper-params` | 2 |" in (tmp_path / "fl.md").read_text()
    import shutil
    shutil.rmtree(tmp_path / "runs")  # a later sitting that kept only git: the published run makes the table
    study.main(args)
    assert not (tmp_path / "runs").exists()
