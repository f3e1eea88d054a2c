"""Atomic writes: an interrupted write leaves the previous file whole."""

import json

import pytest

from metarl.common.files import replaced_atomically, write_json, write_report


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


def strict_loads(text: str):
    """json.loads that refuses the bare NaN/Infinity tokens no strict JSON parser accepts."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null_and_read_back_as_nan(tmp_path):
    import math

    import numpy as np

    from metarl.common.files import dumps, number, read_json

    data = {"a": float("nan"), "b": [1.5, float("inf"), -np.inf, np.float64("nan")], "c": {"d": 2, "e": None},
            "f": True}
    path = tmp_path / "x.json"
    write_json(path, data)
    assert strict_loads(path.read_text()) == {"a": None, "b": [1.5, None, None, None], "c": {"d": 2, "e": None},
                                              "f": True}
    assert read_json(path) == strict_loads(dumps(data))
    assert math.isnan(number(None)) and number(3) == 3.0
    with pytest.raises(TypeError):  # what JSON cannot hold at all is still an error, not silently a string
        dumps({"x": object()})


def test_read_metrics_gives_nan_for_the_nulls_a_diverged_run_wrote(tmp_path):
    import math

    from metarl.common.files import dumps
    from metarl.runs import read_metrics

    (tmp_path / "metrics.jsonl").write_text(
        dumps({"iteration": 1, "env_steps": 10, "trpo/kl": float("nan"), "returns/post_adaptation": -3.0}) + "\n"
        + '{"iteration": 2, "env_steps": 20, "trpo/kl": NaN}\n')  # a file written before strict JSON: still read
    first, second = read_metrics(tmp_path)
    assert math.isnan(first["trpo/kl"]) and first["returns/post_adaptation"] == -3.0
    assert math.isnan(second["trpo/kl"])
