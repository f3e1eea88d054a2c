"""Tests of metarl.config: shipped protocol files, precedence, validation, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from metarl.config import (
    Config,
    ConfigError,
    config_help,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
    validate,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = ["cheetah-dir", "cheetah-vel", "nav2d"]

# Reference protocol (Finn et al. 2017, sec. 5.3 / appendix A.2) shared by all families.
COMMON = dict(
    algo="anil", seed=0, iterations=500, episodes_per_task=20, hidden_sizes=[100, 100],
    inner_steps=1, inner_lr=0.1, first_order=False, gamma=0.99, gae_lambda=1.0,
    max_kl=0.01, cg_iters=10, eval_tasks=40, eval_steps=3, eval_first_lr=0.1,
    eval_later_lr=0.05,
)
PER_FAMILY = {
    "cheetah-dir": dict(meta_batch_size=40, horizon=200, eval_episodes_per_task=20),
    "cheetah-vel": dict(meta_batch_size=40, horizon=200, eval_episodes_per_task=20),
    "nav2d": dict(meta_batch_size=20, horizon=100, eval_episodes_per_task=40),
}


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def raises(match_all: list[str], fn, *args, **kwargs) -> str:
    """Assert fn raises ConfigError whose message contains every string; return it."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for s in match_all:
        assert s in msg, f"{s!r} not in error message {msg!r}"
    return msg


# --- shipped protocol files ------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_yaml_has_protocol_values(name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    assert cfg.env == name
    for key, want in {**COMMON, **PER_FAMILY[name]}.items():
        assert getattr(cfg, key) == want, key


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_yaml_sets_every_field(name):
    import yaml

    data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert set(data) == {f.name for f in dataclasses.fields(Config)}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_yaml_every_key_commented(name):
    lines = (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()
    assert lines[0].startswith("#"), "header comment missing"
    assert any("Finn" in line for line in lines if line.startswith("#")), "no citation"
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        prev = lines[i - 1].lstrip() if i > 0 else ""
        assert "#" in line or prev.startswith("#"), f"line {i + 1} uncommented: {line!r}"


# --- precedence ----------------------------------------------------------------------


def test_defaults_file_overrides_precedence(tmp_path):
    p = write(tmp_path, "inner_lr: 0.2\nmeta_batch_size: 7\n")
    cfg = load_config(p, {"inner_lr": 0.05})
    assert cfg.inner_lr == 0.05  # override beats file
    assert cfg.meta_batch_size == 7  # file beats default
    assert cfg.gamma == Config().gamma == 0.99  # untouched default
    assert load_config() == Config()
    assert load_config(p, {"inner_lr": 0.05}, seed=3).seed == 3


def test_parse_overrides_values_are_yaml():
    got = parse_overrides(["inner_lr=0.05", "hidden_sizes=[64,64]", "first_order=true",
                           "horizon=null", "env=pkg.mod:MyEnv", "baseline_reg=1e-4",
                           "algo = maml"])
    assert got == {"inner_lr": 0.05, "hidden_sizes": [64, 64], "first_order": True,
                   "horizon": None, "env": "pkg.mod:MyEnv", "baseline_reg": 1e-4,
                   "algo": "maml"}
    cfg = load_config(None, got)
    assert cfg.hidden_sizes == [64, 64] and cfg.horizon is None and cfg.algo == "maml"


def test_exponent_float_without_dot_is_a_float(tmp_path):
    # plain PyYAML (YAML 1.1) would read 1e-3 as the string "1e-3"
    assert load_config(write(tmp_path, "max_kl: 1e-3\n")).max_kl == 1e-3


def test_int_accepted_for_float_and_tuple_for_list():
    cfg = Config(inner_lr=1, hidden_sizes=(32,))
    assert cfg.inner_lr == 1.0 and isinstance(cfg.inner_lr, float)
    assert cfg.hidden_sizes == [32]


# --- bad input -----------------------------------------------------------------------


def test_unknown_key_suggests_close_match_and_source(tmp_path):
    p = write(tmp_path, "inner_rl: 0.1\n")
    raises(["inner_rl", "inner_lr", str(p)], load_config, p)
    raises(["inner_rl", "inner_lr", "override"], load_config, None, {"inner_rl": 0.1})


@pytest.mark.parametrize("text,bad", [
    ('meta_batch_size: "forty"\n', "forty"),
    ("meta_batch_size: 4.5\n", "4.5"),
    ("meta_batch_size: true\n", "True"),
    ("inner_lr: fast\n", "fast"),
    ("inner_lr: true\n", "True"),
    ("first_order: 1\n", "1"),
    ("env: 3\n", "3"),
    ("hidden_sizes: [64, x]\n", "x"),
    ("hidden_sizes: 64\n", "64"),
    ("horizon: 100.0\n", "100.0"),
    ("gamma: .nan\n", "nan"),
])
def test_wrong_type(tmp_path, text, bad):
    key = text.split(":")[0]
    raises([key, bad], load_config, write(tmp_path, text))


@pytest.mark.parametrize("key,value,allowed", [
    ("inner_lr", 0, "> 0"),
    ("inner_lr", -0.1, "> 0"),
    ("meta_batch_size", 0, ">= 1"),
    ("gamma", 1.5, "<= 1"),
    ("gamma", 0.0, "0 <"),
    ("gae_lambda", -0.5, "0 <="),
    ("ls_backtrack_ratio", 1.0, "< 1"),
    ("horizon", 0, ">= 1"),
    ("hidden_sizes", [], "non-empty"),
    ("hidden_sizes", [64, 0], ">= 1"),
    ("eval_every", -1, ">= 0"),
    ("cg_damping", -1e-5, ">= 0"),
])
def test_out_of_range(key, value, allowed):
    raises([key, repr(value), allowed], load_config, None, {key: value})


def test_unknown_algo_lists_choices():
    raises(["algo", "ppo", "anil", "maml"], load_config, None, {"algo": "ppo"})


def test_all_problems_reported_together(tmp_path):
    p = write(tmp_path, "inner_rl: 0.1\ngamma: 2\nmeta_batch_size: 0\n")
    raises(["inner_rl", "gamma", "meta_batch_size", "3 configuration problems"],
           load_config, p)


@pytest.mark.parametrize("item", ["inner_lr", "=0.1", "hidden_sizes=[64,"])
def test_malformed_override(item):
    raises([item, "key=value" if "[" not in item else "YAML"], parse_overrides, [item])


def test_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    raises([str(p), "does not exist"], load_config, p)


@pytest.mark.parametrize("text,what", [
    ("- 1\n- 2\n", "mapping"),
    ("just a string\n", "mapping"),
    ("inner_lr: [0.1\n", "not valid YAML"),
    ("inner_lr: 0.1\ninner_lr: 0.2\n", "duplicate"),
])
def test_bad_yaml_file(tmp_path, text, what):
    p = write(tmp_path, text)
    raises([str(p), what], load_config, p)


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing set\n")) == Config()


def test_direct_construction_validates():
    raises(["inner_lr", "-1"], Config, inner_lr=-1)
    raises(["meta_batch_size", "True"], Config, meta_batch_size=True)
    raises(["algo", "anil", "maml"], Config, algo="reptile")
    with pytest.raises(ConfigError):
        dataclasses.replace(Config(), gamma=0.0)


def test_validate_catches_mutation():
    cfg = Config()
    object.__setattr__(cfg, "cg_iters", 0)
    raises(["cg_iters", "0"], validate, cfg)


# --- saving and help -------------------------------------------------------------------


def test_save_load_roundtrip(tmp_path):
    cfg = Config(env="1e-5", algo="maml", horizon=None, hidden_sizes=[64, 32, 16],
                 inner_lr=3e-4, first_order=True, init_log_std=-0.5, seed=-7)
    p = tmp_path / "run" / "config.yaml"
    save_config(cfg, p)
    assert load_config(p) == cfg
    text = p.read_text()
    assert text.index("env:") < text.index("algo:") < text.index("torch_threads:")
    assert list(config_to_dict(cfg)) == [f.name for f in dataclasses.fields(Config)]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_roundtrip(tmp_path, name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_config_help_covers_every_field():
    rows = config_help()
    assert [r[0] for r in rows] == [f.name for f in dataclasses.fields(Config)]
    by_name = {r[0]: r for r in rows}
    assert by_name["horizon"][1] == "int | None" and by_name["horizon"][2] is None
    assert by_name["hidden_sizes"][2] == [100, 100]
    assert "> 0" in by_name["inner_lr"][3]
    assert all(r[3] for r in rows)
