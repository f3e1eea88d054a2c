"""The run directory's file names, its checkpoint format and the errors of the runs layer."""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
KEPT_CHECKPOINTS_DIR = "checkpoints"  # snapshots kept every keep_checkpoint_every iterations
METRICS_FILE = "metrics.jsonl"
METRICS_ARCHIVE = "metrics.jsonl.gz"  # a published run's metrics, gzipped (read_metrics reads either)
POLICY_SNAPSHOT = "policy"  # a kept snapshot's "kind" when it holds the policy alone (compact_snapshot)
EVAL_FILE = "eval.json"
SETUP_FILE = "setup.json"  # what each sitting of a run ran on (metarl.common.provenance)
CHECKPOINT_FORMAT = 1
# Built-in families whose protocol preset ships with the package (metarl.configs): a missing one is an error.
PRESET_FAMILIES = ("cheetah-dir", "cheetah-vel", "nav2d")
TRAINER_KEYS = ("policy", "rng", "noise", "iteration", "env_steps")


class RunError(Exception):
    """An expected problem with a run (unknown env, missing run directory, unreadable checkpoint).

    The message says what is wrong and how to fix it; the CLI prints it as one line, without a traceback.
    """


class RunDiverged(RunError):
    """Training stopped because its metrics stopped being finite; the last good checkpoint is kept."""


class Interrupted(Exception):
    """Training was stopped by Ctrl-C or SIGTERM after a checkpoint of the last completed iteration was saved."""

    def __init__(self, run_dir: Path, iteration: int):
        super().__init__(f"interrupted; checkpoint of iteration {iteration} saved in {run_dir}")
        self.run_dir, self.iteration = run_dir, iteration
