"""The package's layers (issue 53): a module imports only from its own layer and the ones beneath it, so that the
algorithm never reaches for run directories or experiments, and the sampler never for the meta-learner."""

from __future__ import annotations

import ast
from pathlib import Path

from metarl._moved import MOVED

REPO = Path(__file__).resolve().parents[1]
# bottom to top; a module belongs to the first entry that is it or a package holding it
LAYERS = [
    ("common", ("metarl.common",)),
    ("config", ("metarl.config",)),
    ("envs", ("metarl.envs",)),
    ("sampling", ("metarl.sampling",)),
    ("algorithm", ("metarl.algorithm",)),
    ("trainer", ("metarl.distributed", "metarl.trainer")),
    ("runs", ("metarl.runs",)),
    ("experiments", ("metarl.experiments",)),
    ("interface", ("metarl.cli", "metarl.pages", "metarl.__main__", "metarl._moved", "metarl")),
]


def layer_of(module: str) -> int:
    module = MOVED.get(module, module)
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def modules() -> dict[str, Path]:
    """Every module of the package (metarl/ and envs/, installed as metarl.envs) by its dotted name."""
    found = {}
    for root, package in ((REPO / "metarl", "metarl"), (REPO / "envs", "metarl.envs")):
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The metarl modules `path` imports, at any depth of the file (function-level imports count too)."""
    known, out = modules(), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("metarl")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("metarl"):
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known or f"{base}.{a.name}" in MOVED else base
                        for a in node.names}
    return out


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for name, path in sorted(modules().items()):
        if name == "metarl":  # the package's __init__ only registers the families and the moved paths
            continue
        for target in sorted(imports(name, path)):
            if target != "metarl" and layer_of(target) > layer_of(name):
                upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert not upward, "\n".join(upward)


def test_every_module_is_in_a_layer_and_the_old_paths_still_import():
    import importlib

    for name in modules():
        layer_of(name)
    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)
