"""Writing files atomically: a crash or Ctrl-C mid-write leaves the previous version whole, never half a file.

Used for everything a later sitting reads back (checkpoints, metrics, configs, evaluation and benchmark reports).

Every JSON file metarl writes is strict JSON (RFC 8259): JSON has no NaN or infinity, so a non-finite number is
written as `null` (`jsonable`), which pandas, jq and every strict parser read; `number` turns it back into NaN where
a number is expected. TensorBoard keeps the exact value.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block has written it, move it over `path` in one step.

    If the block raises, `path` is left as it was and the temporary file is removed.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)  # same folder, so same filesystem: an atomic rename
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def jsonable(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf; numpy's too) replaced by None, so it dumps as strict JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return None
    return value


def dumps(data: Any, **kwargs) -> str:
    """Strict JSON text of `data` (non-finite numbers as null; anything else JSON cannot hold is an error)."""
    return json.dumps(jsonable(data), allow_nan=False, **kwargs)


def number(value: Any) -> float:
    """A number read back from metarl's JSON: null (a non-finite value when written) is NaN."""
    return math.nan if value is None else float(value)


def read_json(path: Path) -> Any:
    """The JSON in `path` (strict JSON as written by `write_json`; bare NaN tokens of older files are accepted)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Write `data` as strict, indented JSON, atomically."""
    write_text(path, dumps(data, indent=2) + "\n")


def write_report(out: Path, result: dict, markdown: str) -> None:
    """A benchmark's results: `out`.json (the figures, re-readable) and `out`.md (the table), folders made."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), markdown)
