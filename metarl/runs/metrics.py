"""The run's metrics: metrics.jsonl (gzipped when published), read back, truncated on resume, and the log that
writes it and TensorBoard identically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from metarl.common.files import dumps, replaced_atomically, write_text
from metarl.config import Config, config_to_dict
from metarl.runs.layout import METRICS_ARCHIVE, METRICS_FILE


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """RUN_DIR/metrics.jsonl as a list of records; lines that are not JSON objects with an integer iteration (one
    cut short by a crash) are skipped; empty if the file does not exist yet. A null value (a non-finite number when
    written) is read back as NaN."""
    text = _metrics_text(Path(run_dir))
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            records.append({k: math.nan if v is None else v for k, v in record.items()})
    return records


def _metrics_text(run_dir: Path) -> str:
    """metrics.jsonl's text, or a published run's metrics.jsonl.gz unpacked; '' when there is neither."""
    import gzip

    if (run_dir / METRICS_FILE).is_file():
        return (run_dir / METRICS_FILE).read_text(encoding="utf-8")
    if (run_dir / METRICS_ARCHIVE).is_file():
        return gzip.decompress((run_dir / METRICS_ARCHIVE).read_bytes()).decode("utf-8")
    return ""


# Significant digits of a packed metric: float32's round-trip precision (the metrics are float32 tensors' values,
# each read back to the same float32; a timing keeps far more than a clock resolves), about 35% of a packed file
PACKED_DIGITS = 9


def pack_metrics(run_dir: Path, target: Path | None = None) -> Path:
    """Write the run's metrics gzipped to `target` (default RUN_DIR/metrics.jsonl.gz), each number at PACKED_DIGITS
    significant digits (packed_record), byte for byte the same for the same records (no time stamp in the header),
    atomically; returns the file. Packing a packed file again changes nothing."""
    import gzip

    target = target or run_dir / METRICS_ARCHIVE
    lines = []
    for line in _metrics_text(run_dir).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None  # a line cut short by a crash: kept as it is, read_metrics skips it
        lines.append(line if record is None else dumps(packed_record(record)))
    text = "".join(line + "\n" for line in lines)
    with replaced_atomically(target) as tmp:
        Path(tmp).write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    return target


def packed_record(value):
    """`value` (a metrics record, or anything in one) with each float at PACKED_DIGITS significant digits."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{PACKED_DIGITS}g}")
    if isinstance(value, dict):
        return {key: packed_record(item) for key, item in value.items()}
    if isinstance(value, list):
        return [packed_record(item) for item in value]
    return value


def unpack_metrics(run_dir: Path) -> None:
    """Before a published run is trained on: its metrics.jsonl.gz becomes metrics.jsonl again, to append to."""
    archive = run_dir / METRICS_ARCHIVE
    if archive.is_file() and not (run_dir / METRICS_FILE).exists():
        write_text(run_dir / METRICS_FILE, _metrics_text(run_dir))
        archive.unlink()


def truncate_metrics(path: Path, iteration: int, last_eval: int) -> None:
    """Drop metrics.jsonl lines the checkpoint does not cover (written after it, before a crash)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            it = int(record["iteration"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the crash
        is_eval = any(k.startswith("eval/") for k in record)
        if it < iteration or (it == iteration and (not is_eval or last_eval >= iteration)):
            kept.append(line)
    write_text(path, "".join(line + "\n" for line in kept))


# -- logging --------------------------------------------------------------------------------------------------

def hyperparameter_table(cfg: Config) -> str:
    """The config as a markdown table, for TensorBoard's text tab."""
    rows = ["| key | value |", "|---|---|"]
    rows += [f"| {key} | {value} |" for key, value in config_to_dict(cfg).items()]
    return "\n".join(rows)


class RunLog:
    """Writes each iteration's and evaluation's scalars to TensorBoard and to metrics.jsonl, identically."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides points at or after it, i.e. those a crash left past the checkpoint.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self.jsonl = open(run_dir / METRICS_FILE, "a", encoding="utf-8")

    def hyperparameters(self, cfg: Config) -> None:
        self.writer.add_text("hyperparameters", hyperparameter_table(cfg), global_step=0)

    def scalars(self, iteration: int, env_steps: int, scalars: dict) -> None:
        """One metrics.jsonl line and one TensorBoard point per scalar, at x = env_steps."""
        record = {"iteration": iteration, "env_steps": env_steps, **scalars}
        self.jsonl.write(dumps(record) + "\n")  # strict JSON: a non-finite value is null
        self.jsonl.flush()
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=env_steps)

    def warning(self, iteration: int, env_steps: int, text: str) -> None:
        """A warning about the run: a metrics.jsonl line {"iteration", "env_steps", "warning"} and TensorBoard text."""
        self.jsonl.write(dumps({"iteration": iteration, "env_steps": env_steps, "warning": text}) + "\n")
        self.jsonl.flush()
        self.writer.add_text("warnings", text, global_step=env_steps)

    def iteration(self, metrics: dict) -> None:
        scalars = {k: v for k, v in metrics.items() if "/" in k}
        self.scalars(metrics["iteration"], metrics["env_steps"], scalars)

    def evaluation(self, iteration: int, env_steps: int, result: dict) -> None:
        self.scalars(iteration, env_steps, {f"eval/{k}": v for k, v in result.items()})

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()
