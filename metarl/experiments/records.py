"""What a report reads: run records and baseline results under a sweep's root, the papers' cited numbers and the
labels of methods and variants, and the cells aggregated over seeds."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from metarl import runs as run
from metarl.common.files import number
from metarl.config import config_to_dict, load_config
from metarl.experiments.sweep import (
    BASELINES_DIR,
    BRANCH_FILE,
    EVAL_STEPS,
    EVAL_TASKS,
    PPO_FACTS_SUFFIX,
    TIMING_FILE,
    baseline_name,
    read_json,
    run_name,
    setting_names,
    variant,
)

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
# What a published run keeps as it is; its metrics go gzipped and its kept snapshots policy-only (publish_files)
# eval-train.json: a run evaluated on its family's training tasks too (metarl eval --split train; Meta-World)
EVAL_TRAIN_FILE = run.default_eval_path(Path("."), split="train").name
PUBLISHED_FILES = (run.CHECKPOINT_FILE, run.CONFIG_FILE, run.EVAL_FILE, EVAL_TRAIN_FILE, TIMING_FILE, run.SETUP_FILE,
                   BRANCH_FILE)
PUBLISHED_SNAPSHOT_EVERY = 100  # the kept snapshots a published run keeps: every 100 iterations (the studies' use)

# -- the papers' numbers (cited, never computed) ----------------------------------------------------------------
# Raghu et al., ICLR 2020, Table 2: "average return", mean +- std over 3 random initialisations.
ANIL_PAPER_TABLE2 = {
    "maml": {"cheetah-dir": (170.4, 21.0), "cheetah-vel": (-139.0, 18.9), "nav2d": (-20.3, 3.2)},
    "anil": {"cheetah-dir": (363.2, 14.8), "cheetah-vel": (-120.9, 6.3), "nav2d": (-20.1, 2.3)},
}
# Finn et al., ICML 2017, MAML result files: mean return over 40 test tasks after 0, 1, 2, 3 adaptation steps.
MAML_PAPER_CURVES = {
    "cheetah-dir": (-50.7, 293.2, 313.5, 315.7),
    "cheetah-vel": (-129.5, -78.6, -66.6, -60.8),
    "nav2d": (-40.4, -11.7, -3.3, -3.2),
    # The MAML code's Ant result files (icml/icml_ant_results_maml.pkl, icml/icml_antdirec_results_maml.pkl, key
    # task_avg_returns; the forward/backward file used 40 episodes per adaptation step). No ANIL figure exists for
    # them: both algorithms are held to these (issue 54).
    "ant-vel": (30.6, 96.7, 100.1, 101.4),
    "ant-dir": (8.7, 499.2, 500.7, 499.1),
}
# Yu et al., "Meta-World", CoRL 2019, v2 arXiv text, Table 1: average maximum success rate (%) over 10 seeds,
# (meta-train, meta-test). ML1's results are plots only.
METAWORLD_PAPER_TABLE1 = {
    "metaworld-ml10": {"MAML": (44.4, 31.6), "RL2": (86.9, 35.8), "PEARL": (23.2, 13.0)},
}
METHOD_LABELS = {"anil": "ANIL (ours)", "maml": "MAML (ours)", "random-init": "random init + adaptation",
                 "pretrained": "PPO pre-trained on the task mixture + adaptation"}


VARIANT_LABELS = {"paper": "the papers' protocol (reinforce + TRPO)", "promp": "ProMP outer loop",
                  "trpo": "TRPO outer loop", "lvc": "LVC estimator", "dice": "DiCE estimator",
                  "reinforce": "REINFORCE estimator", "meta-sgd": "Meta-SGD inner rule", "kfo": "KFO inner rule",
                  "sgd": "SGD inner rule", "com": "centre-of-mass velocity reward",
                  "displacement": "displacement velocity reward"}
# The papers' setting of each of sweep.VARIANT_KEYS (Finn et al. 2017): a default that departs from it is named
PAPERS_SETUP = {"outer": "trpo", "estimator": "reinforce", "inner_optimizer": "sgd", "forward_velocity": None,
                "promp_max_kl": None}


def method_of(algo: str, kind: str) -> str:
    """The report's method key of a run: its algorithm, with its variant (sweep.variant) after a '+'."""
    return f"{algo}+{kind}" if kind else algo


def base_algo(method: str) -> str:
    """The algorithm of a method key ('anil+promp-lvc' -> 'anil'), whose paper numbers it is compared with."""
    return method.split("+")[0]


def variant_parts(kind: str) -> list[str]:
    """The settings a variant's name joins ('promp-lvc' -> ['promp', 'lvc'], 'promp-meta-sgd' -> ['promp',
    'meta-sgd']): the longest known label at each place, a dash-separated word otherwise."""
    parts, rest = [], kind
    while rest:
        known = [k for k in VARIANT_LABELS if rest == k or rest.startswith(k + "-")]
        part = max(known, key=len) if known else rest.split("-")[0]
        parts.append(part)
        rest = rest[len(part) + 1:]
    return parts


def part_label(part: str) -> str:
    """The words for one setting of a variant's name ('lvc' -> 'LVC estimator', 'kl0.03' -> 'ProMP trust region
    (max KL 0.03)'); an unknown setting as it is."""
    if re.fullmatch(r"kl[0-9.e+-]+", part):
        return f"ProMP trust region (max KL {part[2:]})"
    return {"nokl": "no ProMP trust region"}.get(part, VARIANT_LABELS.get(part, part))


def variant_label(method: str) -> str:
    """'ANIL (ours), ProMP outer loop + LVC estimator' for 'anil+promp-lvc'."""
    algo, _, kind = method.partition("+")
    parts = [part_label(part) for part in variant_parts(kind)]
    return f"{METHOD_LABELS.get(algo, algo)}, {' + '.join(parts)}"


def setup_of(cfg) -> str:
    """The settings of a run that depart from the papers' (PAPERS_SETUP), joined as a variant's name ('promp-lvc' for
    cheetah-dir's default since issue 52); '' for the papers' own."""
    return setting_names(cfg, [key for key, paper in PAPERS_SETUP.items() if getattr(cfg, key) != paper])


class ReportError(run.RunError):
    """An expected problem with a report (no such root, matplotlib missing); printed as one line."""


# -- reading a sweep's root ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunRecord:
    """What the report needs from one run directory."""

    name: str
    path: Path
    env: str
    algo: str
    seed: int
    cfg: object
    iterations_done: int
    curve: list            # (iteration, env_steps, post-adaptation return) per training iteration
    held_out: dict         # iteration -> held-out return after one step, at each evaluation during training
    eval: dict | None      # eval.json
    timing: dict | None    # timing.json
    iteration_time_s: float
    method: str = ""       # the algorithm, with its variant: `anil`, `anil+promp-lvc` (method_of)
    eval_train: dict | None = None  # eval-train.json: `metarl eval --split train` (Meta-World's meta-train success)

    @property
    def finished(self) -> bool:
        """Trained to its configured iterations and evaluated by the sweep (0..3 steps) at that point."""
        e = self.eval or {}
        trained = self.iterations_done >= self.cfg.iterations
        return trained and e.get("iteration") == self.iterations_done and e.get("steps", -1) >= EVAL_STEPS

    @property
    def wall_s(self) -> float:
        """Wall-clock seconds across sittings (timing.json), else the sum of the iterations' times."""
        return self.timing["wall_s"] if self.timing else self.iteration_time_s


def read_run(path: Path) -> RunRecord:
    """A run directory's config, training curve, final evaluation and timing."""
    cfg = load_config(path / run.CONFIG_FILE)
    metrics = run.read_metrics(path)
    # the last line of an iteration wins
    by_iteration = {r["iteration"]: r for r in metrics if "returns/post_adaptation" in r}
    curve = [(i, by_iteration[i]["env_steps"], by_iteration[i]["returns/post_adaptation"])
             for i in sorted(by_iteration)]
    held_out = {r["iteration"]: r["eval/return_step_1"] for r in metrics if "eval/return_step_1" in r}
    return RunRecord(name=path.name, path=path, env=cfg.env, algo=cfg.algo, seed=cfg.seed, cfg=cfg,
                     iterations_done=max(by_iteration, default=0), curve=curve, held_out=held_out,
                     eval=read_json(path / run.EVAL_FILE), timing=read_json(path / TIMING_FILE),
                     iteration_time_s=sum(r.get("time/iteration_s", 0.0) for r in by_iteration.values()),
                     method=method_of(cfg.algo, variant(cfg)),
                     eval_train=read_json(path / EVAL_TRAIN_FILE))


def collect_runs(root: Path) -> list[RunRecord]:
    """Every run directory (a folder with a config) directly under root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"sweep root {str(root)!r} does not exist; pass the folder given to `metarl sweep --root`")
    return [read_run(p) for p in sorted(root.iterdir()) if p.is_dir() and (p / run.CONFIG_FILE).is_file()]


def collect_baselines(root: Path) -> list[dict]:
    """The baseline results in ROOT/baselines/ (not the PPO models' facts)."""
    folder = Path(root) / BASELINES_DIR
    if not folder.is_dir():
        return []
    found = [read_json(p) for p in sorted(folder.glob("*.json")) if not p.name.endswith(PPO_FACTS_SUFFIX)]
    return [b for b in found if b and {"env", "kind", "seed", "returns"} <= set(b)]


def reference_iterations(env: str) -> int | None:
    """The protocol's number of iterations: the family preset's (500), None for a family without a preset."""
    path = run.default_config_file(env)
    return load_config(path).iterations if path else None


# -- the figures of the tables ------------------------------------------------------------------------------------

def summarise(values_by_seed: dict[int, dict]) -> dict:
    """Mean and std over seeds (population std, ddof=0) of each return_step_k (and success_step_k, for families that
    report success), from per-seed eval returns."""
    seeds = sorted(values_by_seed)
    out = {"seeds": seeds, "mean": {}, "std": {}}
    for step in range(EVAL_STEPS + 1):
        for key in (f"return_step_{step}", f"success_step_{step}"):  # success: families that report it
            values = [number(values_by_seed[s][key]) for s in seeds if key in values_by_seed[s]]
            if values:
                out["mean"][key] = float(np.mean(values))
                out["std"][key] = float(np.std(values))
    return out


def end_over_peak(r: RunRecord) -> float | None:
    """The final held-out return after one step over the best of the run's evaluations (training's every
    eval_every, and the final one): 1.0 for a run that ends at its best, below for one that fell from a peak
    (issue 34's "no fall" asks >= 0.9). None where the peak is not positive (the ratio says nothing there)."""
    final = number(r.eval["returns"]["return_step_1"])  # the last iteration's, from eval.json (metrics round it)
    peak = max([final, *(number(v) for i, v in r.held_out.items() if int(i) != r.iterations_done)])
    return final / peak if peak > 0 else None


def method_cells(runs: list[RunRecord], baselines: list[dict]) -> dict:
    """env -> method -> summary over seeds, from finished runs and baseline results only."""
    cells: dict = {}
    for r in runs:
        if r.finished:
            cell = cells.setdefault(r.env, {}).setdefault(r.method, {"per_seed": {}})
            cell.setdefault("setups", set()).add(setup_of(r.cfg))
            cell["per_seed"][r.seed] = {"returns": r.eval["returns"], "iterations": r.iterations_done,
                                        "env_steps": r.eval.get("env_steps"), "wall_s": r.wall_s,
                                        "timing_source": TIMING_FILE if r.timing else "sum of time/iteration_s",
                                        "run_dir": r.name, "end_over_peak": end_over_peak(r)}
            if r.eval_train and r.eval_train.get("iteration") == r.iterations_done:  # of the same checkpoint
                cell["per_seed"][r.seed]["train_returns"] = r.eval_train["returns"]
    for b in baselines:
        cell = cells.setdefault(b["env"], {}).setdefault(b["kind"], {"per_seed": {}})
        cell["per_seed"][b["seed"]] = {"returns": b["returns"], "wall_s": b.get("wall_s"),
                                       "ppo_steps": (b.get("ppo") or {}).get("steps")}
    for env_cells in cells.values():
        for cell in env_cells.values():
            cell.update(summarise({s: v["returns"] for s, v in cell["per_seed"].items()}))
            on_training = {s: v["train_returns"] for s, v in cell["per_seed"].items() if "train_returns" in v}
            if on_training:  # the same measures on the family's training tasks (metarl eval --split train)
                cell["train"] = summarise(on_training)
            if "setups" in cell:  # what the row's runs departed from the papers with ('' for none), one name
                cell["setup"] = " / ".join(sorted(cell.pop("setups")))
    return cells


def missing_cells(runs: list[RunRecord], baselines: list[dict], envs, algos, seeds, kinds) -> list[str]:
    """Grid cells without a finished, full-protocol result, each with the reason and what to do."""
    by_name = {r.name: r for r in runs}
    have_baseline = {(b["env"], b["kind"], b["seed"]) for b in baselines}
    missing = []
    for env in envs:
        full = reference_iterations(env)
        for algo in algos:
            for seed in seeds:
                reason = run_problem(by_name.get(run_name(env, algo, seed)), full)
                if reason:
                    missing.append(f"{run_name(env, algo, seed)}: {reason}")
        for kind in kinds:
            for seed in seeds:
                if (env, kind, seed) not in have_baseline:
                    missing.append(f"{baseline_name(env, kind, seed)}: not run (`metarl sweep --only-baselines`)")
    for r in runs:  # a variant's run beside the grid, started but not finished
        reason = run_problem(r, reference_iterations(r.env)) if r.method != r.algo and r.env in envs else None
        if reason:
            missing.append(f"{r.name}: {reason}")
    return missing


def run_problem(r: RunRecord | None, full: int | None) -> str | None:
    """Why a run does not count as a finished full-protocol result, or None if it does."""
    if r is None:
        return "no run directory (not started, or kept elsewhere until it finishes)"
    if not r.finished:
        if r.iterations_done < r.cfg.iterations:
            return (f"interrupted at iteration {r.iterations_done}/{r.cfg.iterations} (re-run `metarl sweep` to "
                    "resume)")
        return f"trained but no final evaluation in {run.EVAL_FILE} (re-run `metarl sweep` to write it)"
    if r.eval.get("tasks") != EVAL_TASKS:
        return f"final evaluation on {r.eval.get('tasks')} held-out tasks, not {EVAL_TASKS} (in the table, flagged)"
    if full is not None and r.iterations_done < full:
        return f"finished with {r.iterations_done} of the protocol's {full} iterations (in the table, flagged)"
    return None


def env_protocol(env: str, runs: list[RunRecord], baselines: list[dict]) -> dict:
    """The protocol behind an env's numbers, read from its runs' configs (the family's preset if none yet)."""
    from metarl.envs import get_family, make

    cfgs = [r.cfg for r in runs if r.env == env and r.finished] or [r.cfg for r in runs if r.env == env]
    if not cfgs:
        path = run.default_config_file(env)
        cfgs = [load_config(path)] if path else []
    keys = ("horizon", "meta_batch_size", "episodes_per_task", "inner_steps", "inner_lr", "max_kl",
            "iterations", "hidden_sizes", "eval_episodes_per_task", "eval_first_lr", "eval_later_lr", "eval_seed",
            "fvp_subsample", "first_order", "frame_skip")
    protocol = {}
    for key in keys:
        values = sorted({json.dumps(config_to_dict(c)[key]) for c in cfgs})
        protocol[key] = json.loads(values[0]) if len(values) == 1 else " / ".join(values)
    if protocol.get("horizon") is None:
        protocol["horizon"] = get_family(env).horizon
    if protocol.get("frame_skip") is None:  # the family's own, where it has one (gymnasium MuJoCo envs)
        protocol["frame_skip"] = getattr(make(env).unwrapped, "frame_skip", None)
    protocol["ppo_steps"] = sorted({b["ppo"]["steps"] for b in baselines if b["env"] == env and b.get("ppo")})
    protocol["eval_tasks"] = EVAL_TASKS
    return protocol
