"""Atomic writes: an interrupted write leaves the previous file whole."""

import json

import pytest

from metarl.files import replaced_atomically, write_json, write_report


def test_a_write_interrupted_midway_leaves_the_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"runs": {"a": 1}})
    with pytest.raises(KeyboardInterrupt):
        with replaced_atomically(path) as tmp:
            tmp.write_text('{"runs": {"a": 1, "b"')  # half written when the interrupt comes
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"runs": {"a": 1}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_write_report_writes_json_and_markdown_into_a_new_folder(tmp_path):
    out = tmp_path / "new" / "bench"
    write_report(out, {"x": [1.5, 2]}, "| x |\n")
    assert json.loads(out.with_suffix(".json").read_text()) == {"x": [1.5, 2]}
    assert out.with_suffix(".md").read_text() == "| x |\n"
    write_report(out, {"x": []}, "| y |\n")  # a re-run replaces both
    assert json.loads(out.with_suffix(".json").read_text()) == {"x": []}
    assert out.with_suffix(".md").read_text() == "| y |\n"
