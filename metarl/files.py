"""Writing files atomically: a crash or Ctrl-C mid-write leaves the previous version whole, never half a file.

Used for everything a later sitting reads back (checkpoints, metrics, configs, evaluation and benchmark reports).
"""

from __future__ import annotations

import contextlib
import json
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


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_report(out: Path, result: dict, markdown: str) -> None:
    """A benchmark's results: `out`.json (the figures, re-readable) and `out`.md (the table), folders made."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), markdown)
