"""Run directories: resolve a config, train with logging and checkpoints, resume, evaluate (the runs layer).

A run directory holds everything about one training run, so it can be inspected, resumed or evaluated later:

    config.yaml       the resolved configuration (load_config reads it back)
    checkpoint.pt     the latest trainer state, replaced atomically
    checkpoints/      copies of it every keep_checkpoint_every iterations (iteration-NNNNNN.pt), if set; a
                      published run keeps policy-only ones (compact_snapshot)
    metrics.jsonl     one JSON object per iteration, plus one per evaluation (its keys start with "eval/"); a
                      published run holds it gzipped as metrics.jsonl.gz, read the same way (read_metrics)
    events.out.*      TensorBoard scalars (x-axis: env steps) and the hyper-parameter table
    eval.json         written by `metarl eval` (with the set-up it ran on)
    setup.json        the set-up of each sitting that trained the run: versions, vector features
                      (metarl.common.provenance)
    train.lock        held by the one process training the run (metarl.common.lock); empty when none is

Every JSON file here is strict JSON: a non-finite value (a diverged metric) is written as null (metarl.common.files).

The layer's modules, one concern each: `layout` (file names, format, errors), `presets` (resolving a config),
`directory` (creating and locking a run directory), `checkpoints` (saving, loading, restoring, resuming), `metrics`
(metrics.jsonl, the TensorBoard log), `progress` (the progress line, signals), `training` (the loop), `evaluation`
(`metarl eval`) and `divergence` (stopping a diverged run). This package re-exports their public names: `from
metarl.runs import load_trainer` (and the path from before the folders, `metarl.run`, gives this package).

May import: metarl.common, metarl.config, metarl.envs, metarl.sampling, metarl.algorithm, metarl.trainer and
metarl.distributed; never the experiments or the command line (which only parses arguments and prints).
"""

from __future__ import annotations

from metarl.runs.checkpoints import (checkpoint_iteration, compact_snapshot, eval_due, is_complete,
                                     is_policy_snapshot, keep_checkpoint, kept_checkpoint_path, kept_checkpoints,
                                     load_checkpoint, load_run, load_trainer, prepare_resume, restore,
                                     save_checkpoint, speed_settings)  # noqa: F401
from metarl.runs.directory import (create_run, default_run_dir, file_safe, new_run_path, require_run_dir, run_lock,
                                   writable_dir)  # noqa: F401
from metarl.runs.divergence import (MAX_SANE_LOG_STD, WATCHED, Diverged, DivergenceWatch,
                                    likely_cause)  # noqa: F401
from metarl.runs.evaluation import (MAX_EVAL_ENV_STEPS, MAX_EVAL_STEPS, EvalReport, check_evaluation_size,
                                    default_eval_path, evaluate_run, recorded_setup)  # noqa: F401
from metarl.runs.layout import (CHECKPOINT_FILE, CHECKPOINT_FORMAT, CONFIG_FILE, EVAL_FILE, KEPT_CHECKPOINTS_DIR,
                                METRICS_ARCHIVE, METRICS_FILE, POLICY_SNAPSHOT, PRESET_FAMILIES, SETUP_FILE,
                                TRAINER_KEYS, Interrupted, RunDiverged, RunError)  # noqa: F401
from metarl.runs.metrics import (RunLog, hyperparameter_table, pack_metrics, read_metrics, truncate_metrics,
                                 unpack_metrics)  # noqa: F401
from metarl.runs.presets import (check_env, config_file_path, default_config_file, family_default,
                                 paper_config_file, preset_path, presets_dir, resolve_config)  # noqa: F401
from metarl.runs.progress import (Progress, eval_line, progress_line, signals_deferred,
                                  sigterm_as_interrupt)  # noqa: F401
from metarl.runs.training import (record_setup, train)  # noqa: F401
