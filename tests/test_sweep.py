"""metarl.experiments.sweep, metarl.experiments.report and metarl.experiments.baselines: the report on a fake grid, a tiny end-to-end `metarl sweep`
(resumable, publishable), and the copy of a stable-baselines3 PPO actor into our GaussianMLP."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.cli import main as metarl_main
from metarl.config import load_config, parse_overrides, save_config
from metarl.experiments import baselines, sweep
from metarl.experiments.report import build_report
from metarl.experiments.report import variant_label as report_variant_label
from metarl.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVAL_FILE,
    KEPT_CHECKPOINTS_DIR,
    METRICS_ARCHIVE,
    METRICS_FILE,
    SETUP_FILE,
    kept_checkpoints,
    load_checkpoint,
    presets_dir,
    read_metrics,
)
from metarl.runs.metrics import packed_record

CONFIGS = presets_dir()
# One thread each: two torch threads on a busy 2-core machine make tiny updates seconds slower.
TINY = ["meta_batch_size=2", "episodes_per_task=2", "horizon=10", "iterations=2", "eval_tasks=2",
        "eval_episodes_per_task=2", "eval_every=0", "sampler_threads=1", "update_threads=1", "hidden_sizes=[8,8]"]


# -- report on a fake grid --------------------------------------------------------------------------------------

def fake_returns(rng: np.random.Generator) -> dict:
    out = {}
    for step in range(4):
        out[f"return_step_{step}"] = float(rng.uniform(-40, -5))
        out[f"return_step_{step}_std"] = float(rng.uniform(1, 3))
    return out


def fake_run(root: Path, algo: str, seed: int, returns: dict | None, done: int = 500,
             overrides: dict | None = None) -> None:
    """A nav2d run directory as `metarl sweep` leaves it: config, metrics, and eval.json once finished."""
    cfg = load_config(CONFIGS / "nav2d.yaml", {"algo": algo, "seed": seed, **(overrides or {})})
    run_dir = root / sweep.cell_name("nav2d", algo, seed, overrides or {})
    run_dir.mkdir(parents=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    lines = [{"iteration": i, "env_steps": 4000 * i + seed, "returns/pre_adaptation": -30.0,
              "returns/post_adaptation": -30.0 + 0.02 * i + seed, "time/iteration_s": 0.5} for i in range(1, done + 1)]
    lines.append({"iteration": done, "env_steps": 4000 * done, "eval/return_step_0": -1.0})  # an eval line
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    if returns is not None:
        (run_dir / EVAL_FILE).write_text(json.dumps(
            {"env": "nav2d", "algo": algo, "seed": seed, "iteration": done, "env_steps": 4000 * done, "horizon": 100,
             "tasks": 40, "steps": 3, "episodes": 40, "eval_seed": 12345, "returns": returns}))


def fake_grid(root: Path, rng: np.random.Generator) -> tuple[dict, dict]:
    """Two finished seeds of each algorithm, an interrupted MAML seed 2 and one random-init baseline."""
    evals = {(algo, seed): fake_returns(rng) for algo in ("anil", "maml") for seed in (0, 1)}
    for (algo, seed), returns in evals.items():
        fake_run(root, algo, seed, returns)
    fake_run(root, "maml", 2, None, done=120)  # interrupted: must be left out of the numbers and listed
    baseline = {"env": "nav2d", "kind": "random-init", "seed": 0, "horizon": 100, "tasks": 40, "steps": 3,
                "episodes": 40, "returns": fake_returns(rng), "wall_s": 12.0}
    (root / sweep.BASELINES_DIR).mkdir()
    (root / sweep.BASELINES_DIR / "nav2d-random-init-seed0.json").write_text(json.dumps(baseline))
    return evals, baseline


def test_report_table_matches_the_eval_files(tmp_path):
    root, out, rng = tmp_path / "grid", tmp_path / "out", np.random.default_rng(0)
    evals, baseline = fake_grid(root, rng)

    code = metarl_main(["report", str(root), "--out", str(out), "--envs", "nav2d"])
    assert code == 0
    md = (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    for algo, label in (("anil", "ANIL (ours)"), ("maml", "MAML (ours)")):
        row = rows[label]
        assert row.split("|")[2].strip() == "2" and row.split("|")[3].strip() == "500"  # seeds, iterations
        for step in range(4):
            values = [evals[(algo, seed)][f"return_step_{step}"] for seed in (0, 1)]
            assert f"{np.mean(values):.1f} ± {np.std(values):.1f}" in row
    assert "-20.1 ± 2.3" in rows["ANIL (ours)"]  # the ANIL paper's nav2d number beside ours
    random_row = rows["random init + adaptation"]
    assert f"{baseline['returns']['return_step_1']:.1f} ± 0.0" in random_row
    assert "-40.4" in md and "-11.7" in md  # the MAML paper's reference curve

    report = json.loads((out / "report.json").read_text())
    anil = report["cells"]["nav2d"]["anil"]
    assert anil["seeds"] == [0, 1]
    values = [evals[("anil", seed)]["return_step_2"] for seed in (0, 1)]
    assert anil["mean"]["return_step_2"] == pytest.approx(np.mean(values))
    assert anil["std"]["return_step_2"] == pytest.approx(np.std(values))
    assert report["cells"]["nav2d"]["maml"]["seeds"] == [0, 1]  # the interrupted seed 2 is not averaged in
    missing = "\n".join(report["missing"])
    assert "nav2d-maml-seed2: interrupted at iteration 120/500" in missing
    assert "nav2d-anil-seed2: no run directory" in missing
    assert "nav2d-pretrained-seed0: not run" in missing and "nav2d-random-init-seed0" not in missing
    assert "## Missing" in md and "nav2d-maml-seed2" in md
    assert f"metarl report {root} --out {out} --envs nav2d" in md  # the regenerating command, at the top
    for name in ("curves_nav2d.png", "adaptation_nav2d.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_the_table_says_how_far_the_final_return_fell_from_the_runs_peak(tmp_path):
    """end / peak: the final held-out return after one step over the best held-out evaluation of the run; the
    lowest seed is shown, and a non-positive peak gives no ratio."""
    root, out = tmp_path / "grid", tmp_path / "out"
    finals = {("anil", 0): 80.0, ("anil", 1): 90.0, ("maml", 0): -12.0}
    for (algo, seed), final in finals.items():
        fake_run(root, algo, seed, {f"return_step_{k}": final for k in range(4)})
        metrics = root / sweep.cell_name("nav2d", algo, seed, {}) / METRICS_FILE
        peaks = {("anil", 0): 100.0, ("anil", 1): 60.0, ("maml", 0): -5.0}
        metrics.write_text(metrics.read_text() + json.dumps({"iteration": 250, "eval/return_step_1": peaks[(algo, seed)]})
                           + "\n")
    assert metarl_main(["report", str(root), "--out", str(out), "--envs", "nav2d", "--seeds", "0", "1"]) == 0
    assert (out / "heldout_nav2d.png").read_bytes()[:4] == b"\x89PNG"  # the evaluations drawn against iteration
    assert "](heldout_nav2d.png)" in (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|") for line in (out / "report.md").read_text().splitlines()
            if line.startswith("| ")}
    assert rows["ANIL (ours)"][-3].strip() == "0.80 (seed 0)"  # 80 after a peak of 100; seed 1 ends at its best
    assert rows["MAML (ours)"][-3].strip() == "-"
    cells = json.loads((out / "report.json").read_text())["cells"]["nav2d"]
    assert cells["anil"]["per_seed"]["1"]["end_over_peak"] == 1.0
    assert cells["maml"]["per_seed"]["0"]["end_over_peak"] is None


def test_a_variants_runs_get_their_own_directories_and_rows_beside_the_algorithms(tmp_path):
    promp = {"outer": "promp", "estimator": "lvc"}
    assert sweep.cell_name("nav2d", "anil", 0, promp) == "nav2d-anil-promp-lvc-seed0"
    assert sweep.cell_name("nav2d", "maml", 1, {"estimator": "dice"}) == "nav2d-maml-dice-seed1"
    assert sweep.cell_name("nav2d", "anil", 0, {"max_kl": 0.02}) == "nav2d-anil-seed0"  # not a variant
    com = {**promp, "forward_velocity": "com"}  # the cheetah reward's other v_x is a variant of its own
    assert sweep.cell_name("cheetah-vel", "anil", 0, com) == "cheetah-vel-anil-promp-lvc-com-seed0"
    assert report_variant_label("anil+promp-lvc-com") == ("ANIL (ours), ProMP outer loop + LVC estimator + "
                                                           "centre-of-mass velocity reward")
    # cheetah-dir's default is ProMP + LVC with Meta-SGD and a trust region of 0.5: its name is the plain one, the
    # papers' loop is 'paper', and a variant is named by what departs from the default
    assert sweep.cell_name("cheetah-dir", "anil", 0, {}) == "cheetah-dir-anil-seed0"
    assert sweep.cell_name("cheetah-dir", "anil", 0, promp) == "cheetah-dir-anil-seed0"
    assert sweep.cell_name("cheetah-dir", "anil", 0, {"inner_optimizer": "meta-sgd", "promp_max_kl": 0.5}) == \
        "cheetah-dir-anil-seed0"
    paper = {"outer": "trpo", "estimator": "reinforce", "inner_optimizer": "sgd", "promp_max_kl": None}
    assert sweep.cell_name("cheetah-dir", "maml", 2, paper) == "cheetah-dir-maml-paper-seed2"
    assert sweep.paper_run_name("cheetah-dir", "maml", 2) == "cheetah-dir-maml-paper-seed2"
    assert sweep.paper_run_name("nav2d", "maml", 2) == "nav2d-maml-seed2"  # nav2d's default is the papers'
    assert sweep.cell_name("cheetah-dir", "anil", 0, {"forward_velocity": "com"}) == "cheetah-dir-anil-com-seed0"
    assert sweep.cell_name("cheetah-dir", "anil", 0, {"inner_optimizer": "sgd", "promp_max_kl": None}) == \
        "cheetah-dir-anil-sgd-nokl-seed0"  # ProMP + LVC alone, the default before
    assert sweep.cell_name("cheetah-dir", "anil", 0, {"outer": "trpo"}) == "cheetah-dir-anil-trpo-seed0"
    assert report_variant_label("anil+promp-meta-sgd") == "ANIL (ours), ProMP outer loop + Meta-SGD inner rule"
    assert report_variant_label("anil+sgd-nokl") == "ANIL (ours), SGD inner rule + no ProMP trust region"
    # ProMP's trust region changes what a run learns: a run with one never shares a directory with one without
    trust = {"inner_optimizer": "meta-sgd", "promp_max_kl": 0.03}
    assert sweep.cell_name("cheetah-dir", "anil", 2, trust) == "cheetah-dir-anil-kl0.03-seed2"
    assert report_variant_label("anil+meta-sgd-kl0.03") == ("ANIL (ours), Meta-SGD inner rule + ProMP trust region "
                                                             "(max KL 0.03)")
    assert report_variant_label("maml+paper") == "MAML (ours), the papers' protocol (reinforce + TRPO)"
    root, out, rng = tmp_path / "grid", tmp_path / "out", np.random.default_rng(2)
    evals, _ = fake_grid(root, rng)
    variant = {seed: fake_returns(rng) for seed in (0, 1)}
    for seed, returns in variant.items():
        fake_run(root, "anil", seed, returns, overrides=promp)
    fake_run(root, "anil", 2, None, done=40, overrides=promp)
    assert metarl_main(["report", str(root), "--out", str(out), "--envs", "nav2d"]) == 0
    md = (out / "report.md").read_text()
    labels = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")]
    row = "ANIL (ours), ProMP outer loop + LVC estimator"
    assert labels.index(row) == labels.index("ANIL (ours)") + 1  # beside the algorithm's own row
    line = next(line for line in md.splitlines() if line.startswith(f"| {row} |"))
    values = [variant[seed]["return_step_1"] for seed in (0, 1)]
    assert f"{np.mean(values):.1f} ± {np.std(values):.1f}" in line and "-20.1 ± 2.3" in line
    report = json.loads((out / "report.json").read_text())
    assert report["cells"]["nav2d"]["anil"]["mean"]["return_step_1"] == pytest.approx(
        np.mean([evals[("anil", seed)]["return_step_1"] for seed in (0, 1)]))  # today's row is unchanged
    assert "nav2d-anil-promp-lvc-seed2: interrupted at iteration 40/500" in "\n".join(report["missing"])


def test_metarl_report_command_writes_the_report(tmp_path):
    """The console command as a user runs it: report.md and report.json with the documented top-level keys."""
    root, out = tmp_path / "grid", tmp_path / "out"
    fake_grid(root, np.random.default_rng(1))
    proc = subprocess.run([sys.executable, "-m", "metarl", "report", str(root), "--out", str(out), "--envs", "nav2d",
                           "--seeds", "0", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out / 'report.md'}, report.json and 2 figures" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert {"generated", "root", "commands", "envs", "protocol", "cells", "references", "runs", "baselines",
            "missing", "plots"} <= set(report)
    assert set(report["cells"]["nav2d"]) == {"anil", "maml", "random-init"}
    assert report["references"]["anil_paper_table2"]["anil"]["nav2d"] == [-20.1, 2.3]
    assert "## nav2d" in (out / "report.md").read_text()

    proc = subprocess.run([sys.executable, "-m", "metarl", "report", str(tmp_path / "nothing"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("metarl: error: sweep root") and "does not exist" in proc.stderr


def test_a_sitting_killed_without_warning_has_recorded_how_far_it_got(tmp_path):
    metrics = tmp_path / METRICS_FILE
    log = lambda it: metrics.open("a").write(json.dumps({"iteration": it, "returns/post_adaptation": 1.0}) + "\n")
    for it in (1, 2, 3):
        log(it)
    sitting = sweep.Sitting(tmp_path, jobs=1, from_iteration=3)
    sitting.save()  # at the start
    log(4)
    log(5)
    metrics.open("a").write('{"iteration": 6, "returns/post')  # a line cut short by the kill
    sitting.save()  # a heartbeat; then the process dies (no __exit__)
    record = json.loads((tmp_path / sweep.TIMING_FILE).read_text())["sittings"][-1]
    assert (record["from_iteration"], record["to_iteration"], record["ended"]) == (3, 5, False)


# -- sweep, end to end on a tiny nav2d grid cell -------------------------------------------------------------------

def test_sweep_is_resumable_and_publishable(tmp_path, capsys):
    root = tmp_path / "grid"
    args = ["sweep", "--root", str(root), "--envs", "nav2d", "--algos", "anil", "--seeds", "0", "--set", *TINY,
            "keep_checkpoint_every=1"]
    assert metarl_main(args) == 0
    run_dir = root / "nav2d-anil-seed0"
    evaluation = json.loads((run_dir / EVAL_FILE).read_text())
    assert (evaluation["iteration"], evaluation["tasks"], evaluation["steps"]) == (2, 40, 3)
    timing = json.loads((run_dir / sweep.TIMING_FILE).read_text())
    assert len(timing["sittings"]) == 1 and timing["sittings"][0]["ended"] and timing["wall_s"] > 0
    assert timing["wall_s"] == pytest.approx(timing["train_s"] + timing["eval_s"])
    metrics = (run_dir / METRICS_FILE).read_text()
    capsys.readouterr()

    assert metarl_main(args) == 0  # a second time: nothing to do
    assert "already trained (2/2 iterations) and evaluated" in capsys.readouterr().out
    assert (run_dir / METRICS_FILE).read_text() == metrics
    assert len(json.loads((run_dir / sweep.TIMING_FILE).read_text())["sittings"]) == 1
    assert "metarl sweep --root" in (root / sweep.COMMANDS_FILE).read_text()

    other = ["sweep", "--root", str(root), "--envs", "nav2d", "--algos", "anil", "--seeds", "0", "--set", *TINY[:-1]]
    assert metarl_main(other) == 1  # same folder, other protocol: refused with the fix in the message
    assert "different protocol (hidden_sizes: saved [8, 8], requested [100, 100]" in capsys.readouterr().err

    dest = tmp_path / "published"
    dest.mkdir()
    (dest / sweep.COMMANDS_FILE).write_text("metarl sweep --root elsewhere\n")
    publish = ["publish", str(root), str(dest), "--keep-every", "1"]
    assert metarl_main(publish) == 0
    # a run made after a publish is listed before the next publish, which must come after it to copy it
    later = ["sweep", "--root", str(root), "--envs", "nav2d", "--algos", "maml", "--seeds", "0"]
    sweep.record_command(root, later)
    assert metarl_main(publish) == 0
    # commands published earlier (another root, another machine) are kept first, this root's follow once each
    published = (dest / sweep.COMMANDS_FILE).read_text().splitlines()
    assert published[0] == "metarl sweep --root elsewhere"
    assert published[1:] == (root / sweep.COMMANDS_FILE).read_text().splitlines()
    assert published[1:] == [sweep.command_line(c) for c in (args, later, publish)]
    copy = dest / "nav2d-anil-seed0"
    assert sorted(p.name for p in copy.iterdir()) == sorted([CHECKPOINT_FILE, KEPT_CHECKPOINTS_DIR, CONFIG_FILE,
                                                             EVAL_FILE, METRICS_ARCHIVE, sweep.TIMING_FILE,
                                                             SETUP_FILE])
    assert read_metrics(copy) == [packed_record(m) for m in read_metrics(run_dir)]  # gzipped at float32's precision
    # the kept snapshots of every --keep-every iterations travel with the run, policy-only, but for the last one,
    # which checkpoint.pt holds
    assert [p.name for p in kept_checkpoints(run_dir)] == ["iteration-000001.pt", "iteration-000002.pt"]
    assert [p.name for p in kept_checkpoints(copy)] == ["iteration-000001.pt"]
    snapshot = load_checkpoint(copy, copy / KEPT_CHECKPOINTS_DIR / "iteration-000001.pt")
    full = load_checkpoint(run_dir, run_dir / KEPT_CHECKPOINTS_DIR / "iteration-000001.pt")
    assert set(snapshot["trainer"]) == {"policy", "iteration", "env_steps"} and snapshot["trainer"]["iteration"] == 1
    for name, value in full["trainer"]["policy"].items():
        assert torch.equal(snapshot["trainer"]["policy"][name], value)
    assert metarl_main(["eval", str(copy), "--tasks", "40", "--steps", "3", "--episodes", "2"]) == 0
    assert json.loads((copy / EVAL_FILE).read_text())["returns"] == evaluation["returns"]

    # publishing again leaves an already published run alone: a re-evaluation made on the copy survives
    (copy / EVAL_FILE).write_text(json.dumps({**evaluation, "note": "re-evaluated on the copy"}))
    capsys.readouterr()
    assert metarl_main(publish) == 0
    assert "published 0 finished run(s) (1 already there" in capsys.readouterr().out
    assert json.loads((copy / EVAL_FILE).read_text())["note"] == "re-evaluated on the copy"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_run_started_on_a_gpu_finishes_and_is_evaluated_on_a_cpu_machine(tmp_path, capsys):
    """A run's config.yaml keeps the device it was started on (cuda on a GPU machine); a sweep resuming it on a
    machine without a GPU trains and evaluates it with the sitting's device, and `metarl eval` takes --set device=cpu."""
    root = tmp_path / "grid"
    args = ["sweep", "--root", str(root), "--envs", "nav2d", "--algos", "anil", "--seeds", "0", "--set", *TINY]
    assert metarl_main([*args[:-len(TINY)], *TINY, "iterations=1"]) == 0
    run_dir = root / "nav2d-anil-seed0"
    config_path = run_dir / CONFIG_FILE
    save_config(dataclasses.replace(load_config(config_path), device="cuda"), config_path)  # as a GPU sitting saves it
    capsys.readouterr()

    assert metarl_main(args) == 0
    assert "trained to 2 iterations, evaluated" in capsys.readouterr().out
    assert json.loads((run_dir / EVAL_FILE).read_text())["iteration"] == 2
    assert (load_config(config_path).device, load_config(config_path).iterations) == ("cuda", 2)

    again = tmp_path / "again.json"
    assert metarl_main(["eval", str(run_dir), "--out", str(again), "--set", "seed=3"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed cannot change for an evaluation" in err, err
    assert not again.exists()
    evaluation = json.loads((run_dir / EVAL_FILE).read_text())["returns"]
    for speed in ([], ["--set", "device=cpu", "sampler_threads=2"]):  # the saved device is absent here: the CPU
        assert metarl_main(["eval", str(run_dir), "--out", str(again), "--tasks", "40", "--steps", "3", *speed]) == 0
        assert ("loading it on the CPU" in capsys.readouterr().err) == (not speed)
        assert json.loads(again.read_text())["returns"] == evaluation
    assert (load_config(config_path).device, load_config(config_path).iterations) == ("cuda", 2)


def test_a_baseline_stays_valid_when_only_the_meta_update_changes():
    """Baselines are never meta-trained: TRPO settings do not invalidate them, the evaluation protocol does."""
    from metarl.config import config_to_dict

    paper = CONFIGS / "cheetah-dir-paper.yaml"
    saved = config_to_dict(load_config(paper, {"fvp_subsample": 0.2, "seed": 1}))
    assert sweep.same_protocol(saved, load_config(paper, {"seed": 1, "max_kl": 0.02}))
    assert not sweep.same_protocol(saved, load_config(paper, {"seed": 1, "eval_seed": 7}))
    assert not sweep.same_protocol(saved, load_config(paper, {"seed": 2}))
    # a resumed meta-training run is still held to its TRPO settings
    requested = load_config(paper, {"seed": 1})
    differences = sweep.config_differences(load_config(None, saved), requested)
    assert differences == ["fvp_subsample: saved 0.2, requested 1.0"]
    # ... but not to the settings of an outer loop it does not use: ProMP takes no Fisher products
    promp = load_config(CONFIGS / "cheetah-dir.yaml", {"seed": 1})
    assert sweep.config_differences(load_config(CONFIGS / "cheetah-dir.yaml", {"seed": 1, "fvp_subsample": 0.2,
                                                                                 "fvp_precision": "float32"}),
                                    promp) == []
    assert sweep.config_differences(load_config(CONFIGS / "cheetah-dir.yaml", {"seed": 1, "promp_lr": 0.01}),
                                    promp) == ["promp_lr: saved 0.01, requested 0.001"]


def test_ppo_task_mixture_env_takes_the_configs_frame_skip():
    cfg = load_config(CONFIGS / "cheetah-vel.yaml")
    assert cfg.frame_skip == 1  # the MAML code's rllab cheetah
    model = baselines.ppo_model(cfg, seed=0, steps=64, n_envs=1)
    assert model.get_env().envs[0].unwrapped.dt == pytest.approx(0.01)
    model = baselines.ppo_model(load_config(CONFIGS / "cheetah-vel.yaml", {"frame_skip": 5}), seed=0, steps=64,
                                n_envs=1)
    assert model.get_env().envs[0].unwrapped.dt == pytest.approx(0.05)


def test_ppo_progress_reports_steps_and_training_return(capsys):
    cfg = load_config(CONFIGS / "nav2d.yaml")
    model = baselines.ppo_model(cfg, seed=0, steps=64, n_envs=1)  # rollouts of 64 steps; nav2d episodes last 100
    model.learn(total_timesteps=256, callback=baselines.ppo_progress(256, reports=4))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PPO env steps")]
    assert [line.split()[3] for line in lines] == ["64/256", "128/256", "192/256", "256/256"]
    assert "return       none" in lines[0]  # no episode has ended after 64 steps
    finished = [info["r"] for info in model.ep_info_buffer]
    assert len(finished) == 2 and f"return {sum(finished) / 2:10.2f}" in lines[-1]


# -- PPO actor -> GaussianMLP --------------------------------------------------------------------------------------

def test_ppo_actor_copy_gives_the_same_action_means():
    from metarl.algorithm.policy import GaussianMLP

    cfg = load_config(CONFIGS / "cheetah-dir.yaml")
    model = baselines.ppo_model(cfg, seed=0, steps=64, n_envs=1)  # built, never trained
    torch.manual_seed(0)
    with torch.no_grad():  # move the weights off their initialisation so that every one of them matters
        for param in model.policy.parameters():
            param.add_(0.3 * torch.randn_like(param))
    policy = GaussianMLP(17, 6, cfg.hidden_sizes, cfg.init_log_std)
    policy.load_state_dict(baselines.ppo_actor_state_dict(model.policy, policy))

    obs = torch.randn(64, 17)
    with torch.no_grad():
        theirs = model.policy.get_distribution(obs).distribution
        mean, log_std = policy(obs)
    torch.testing.assert_close(mean, theirs.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_std.exp(), theirs.stddev, rtol=1e-6, atol=1e-6)

    with pytest.raises(ValueError, match="hidden_sizes"):
        baselines.ppo_actor_state_dict(model.policy, GaussianMLP(17, 6, [64, 64]))


def test_a_sweep_on_a_local_ray_instance_trains_and_evaluates_each_run_and_resumes(tmp_path, capsys):
    pytest.importorskip("ray", reason="the optional extra `ray` is not installed (pip install \"metarl[ray]\")")
    root = tmp_path / "grid"
    args = ["sweep", "--root", str(root), "--envs", "nav2d", "--algos", "anil", "maml", "--seeds", "0",
            "--engine", "ray", "--set", *TINY]
    assert metarl_main(args) == 0
    for algo in ("anil", "maml"):
        run_dir = root / f"nav2d-{algo}-seed0"
        assert json.loads((run_dir / EVAL_FILE).read_text())["iteration"] == 2
        assert json.loads((run_dir / sweep.TIMING_FILE).read_text())["sittings"][0]["ended"]
    capsys.readouterr()
    assert metarl_main(args) == 0  # the same bookkeeping: finished runs are skipped
    assert capsys.readouterr().out.count("already trained (2/2 iterations) and evaluated") == 2
    assert "--engine ray" in (root / sweep.COMMANDS_FILE).read_text()


def test_the_ray_engine_without_ray_is_a_one_line_error_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    args = ["sweep", "--root", str(tmp_path / "grid"), "--envs", "nav2d", "--algos", "anil", "--seeds", "0",
            "--engine", "ray", "--set", *TINY]
    assert metarl_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("metarl: error: --engine ray needs Ray") and 'metarl[ray]' in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_still_training_is_published_as_it_stands_and_a_later_sweep_finishes_a_copy_of_it(tmp_path, capsys):
    """`metarl publish --unfinished`: a run stopped before its last iteration goes to DEST as it stands (checkpoint,
    gzipped metrics); a later sitting copies it to a sweep root and the same sweep command finishes it there, each
    iteration trained once."""
    from metarl.runs import create_run, train

    root, dest, later = tmp_path / "grid", tmp_path / "published", tmp_path / "later"
    cfg = sweep.cell_config("nav2d", "anil", 0, parse_overrides([*TINY[:3], "iterations=3", *TINY[4:]]))
    run_dir = create_run(cfg, root / "nav2d-anil-seed0")
    train(run_dir, dataclasses.replace(cfg, iterations=2), bar=False)  # the sitting ends at iteration 2 of 3
    assert metarl_main(["publish", str(root), str(dest)]) == 0
    assert not (dest / "nav2d-anil-seed0").exists()  # finished runs only, by default
    assert metarl_main(["publish", str(root), str(dest), "--unfinished"]) == 0
    copy = dest / "nav2d-anil-seed0"
    assert (copy / METRICS_ARCHIVE).is_file() and (copy / CHECKPOINT_FILE).is_file()
    report = build_report(dest, envs=["nav2d"], algos=["anil"], seeds=[0])
    assert "nav2d-anil-seed0: interrupted at iteration 2/3" in "\n".join(report["missing"])
    shutil.copytree(copy, later / copy.name)  # the next sitting, on a machine with git only
    args = ["sweep", "--root", str(later), "--envs", "nav2d", "--algos", "anil", "--seeds", "0", "--set",
            *TINY[:3], "iterations=3", *TINY[4:]]
    assert metarl_main(args) == 0
    trained = [m["iteration"] for m in read_metrics(later / copy.name) if "returns/post_adaptation" in m]
    assert trained == [1, 2, 3] and json.loads((later / copy.name / EVAL_FILE).read_text())["iteration"] == 3
