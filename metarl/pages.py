"""The generated sections of README.md and docs/: every table of results, timings, config keys and metrics.

A page marks a generated section with two lines,

    <!-- BEGIN generated: NAME -->
    ...
    <!-- END generated: NAME -->

where NAME is a generator below (`config-keys` or `config-keys PREFIX`, `metrics` or `metrics TEXT`, `families`,
`headline`, `status`, `speed`, `layout`) or `include PATH`, the content of a file written by a command (a report of `metarl report`, a benchmark's or a study's .md). Nothing
between the markers is typed by hand: `python -m metarl.pages` rewrites every section from its source, and
`python -m metarl.pages --check` (run by the test suite) fails when one is out of date.

    python -m metarl.pages            # regenerate README.md and docs/*.md in place
    python -m metarl.pages --check    # list stale sections, exit 1 if any
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
GRID_REPORT = Path("benchmarks/results/grid/report.json")
SECTION = re.compile(r"(<!-- BEGIN generated: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- END generated: (?P=name) -->)",
                     re.S)
ALGOS = ("anil", "maml")
CODE_LANGUAGES = {".py": "python", ".yaml": "yaml", ".sh": "bash"}
FAMILY_TITLES = {"cheetah-dir": "HalfCheetah-Direction", "cheetah-vel": "HalfCheetah-Velocity",
                 "nav2d": "2D-Navigation", "ant-vel": "Ant-Velocity", "ant-dir": "Ant-Direction",
                 "ant-goal": "Ant-Goal", "humanoid-dir": "Humanoid-Direction", "hopper-params": "Hopper-Params",
                 "walker-params": "Walker-Params"}


def pages(root: Path = REPO) -> list[Path]:
    """The pages that may hold generated sections: the README, docs/**/*.md and benchmarks/results/README.md."""
    found = [root / "README.md", *sorted((root / "docs").rglob("*.md")), root / "benchmarks" / "results" / "README.md"]
    return [p for p in found if p.is_file()]


# -- generators -----------------------------------------------------------------------------------------------

def config_keys(root: Path, prefix: str = "") -> str:
    """Every config key (or those starting with `prefix`) with its type, default and meaning, from Config itself."""
    from metarl.config import config_help

    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    rows += [f"| `{name}` | {type_name} | {default} | {text} |" for name, type_name, default, text in config_help()
             if name.startswith(prefix)]
    return "\n".join(rows)


def metrics(root: Path, containing: str = "") -> str:
    """Every TensorBoard tag / metrics.jsonl key the trainer writes (or those containing `containing`), from
    metarl.trainer.METRICS."""
    from metarl.trainer import EVAL_METRICS, METRICS

    rows = ["| tag | meaning |", "| --- | --- |"]
    rows += [f"| `{tag}` | {text.replace('|', chr(92) + '|')} |" for tag, text in {**METRICS, **EVAL_METRICS}.items()
             if containing in tag]  # a table cell: the pipes of ||x|| escaped
    return "\n".join(rows)


def _docstring_field(cls: type, field: str) -> str:
    """The text after `field:` in a class docstring, up to the end of its sentence (e.g. the reward's formula)."""
    doc = " ".join(line.strip() for line in (cls.__doc__ or "").splitlines())
    found = re.search(rf"{field}:\s*(.+?)(?:\.\s|\.$| with )", doc)
    text = re.sub(r"\s+\([^()]*\)", "", found.group(1)).split(";")[0] if found else ""  # asides dropped
    return text.strip().replace("|", "\\|")  # a table cell: escape the pipes of |x| and ||x||


def families(root: Path) -> str:
    """The built-in task families, from the registry and each env class's docstring (Tasks:, Reward:)."""
    from metarl.envs import get_family

    rows = ["| name | gymnasium id | tasks | reward | horizon |", "| --- | --- | --- | --- | --- |"]
    for name in FAMILY_TITLES:
        family = get_family(name)
        rows.append(f"| `{name}` | `{family.gym_id}` | {_docstring_field(family.env_cls, 'Tasks')} | "
                    f"{_docstring_field(family.env_cls, 'Reward')} | {family.horizon} |")
    return "\n".join(rows)


def layout(root: Path) -> str:
    """The package's folders, bottom layer first, each with the first sentence of its docstring (what it holds and
    what it may import: metarl/*/__init__.py), its modules and their line counts; then the top-level modules."""
    def lines(path: Path) -> int:
        return len(path.read_text(encoding="utf-8").splitlines())

    def summary(path: Path) -> str:  # the first paragraph, and the one saying what the folder may import
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]
        return " ".join(p for i, p in enumerate(paragraphs) if i == 0 or p.startswith("May import"))

    rows = ["| folder | holds | modules (lines) |", "| --- | --- | --- |"]
    order = ["common", "sampling", "algorithm", "runs", "experiments"]
    packages = sorted((p for p in (root / "metarl").iterdir() if (p / "__init__.py").is_file()),
                      key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    for package in packages:
        modules = sorted(m for m in package.glob("*.py") if m.name != "__init__.py")
        total = sum(lines(m) for m in modules)
        rows.append(f"| `metarl/{package.name}/` ({total}) | {summary(package / '__init__.py')} | "
                    + ", ".join(f"`{m.stem}` ({lines(m)})" for m in modules) + " |")
    top = sorted(m for m in (root / "metarl").glob("*.py") if not m.name.startswith("_"))
    rows.append(f"| `metarl/` ({sum(lines(m) for m in top)}) | the top: what a user imports or runs first | "
                + ", ".join(f"`{m.stem}` ({lines(m)})" for m in top) + " |")
    envs = sorted((root / "envs").glob("*.py"))
    rows.append(f"| `envs/` as `metarl.envs` ({sum(lines(m) for m in envs)}) | "
                f"{summary(root / 'envs' / '__init__.py')} | "
                + ", ".join(f"`{m.stem}` ({lines(m)})" for m in envs if m.name != "__init__.py") + " |")
    return "\n".join(rows)


def _grid(root: Path) -> dict:
    return json.loads((root / GRID_REPORT).read_text(encoding="utf-8"))


def _cell(report: dict, env: str, algo: str) -> dict | None:
    return report["cells"].get(env, {}).get(algo)


def _methods(report: dict, env: str, algo: str) -> list[str]:
    """The algorithm's method keys in the grid report for `env`: itself, then its variants ('anil+promp-lvc')."""
    return [algo, *sorted(k for k in report["cells"].get(env, {}) if k.startswith(f"{algo}+"))]


def _label(method: str, cell: dict | None = None) -> str:
    """'ANIL' for 'anil'; 'ANIL, promp-lvc' for a variant, 'ANIL, papers' protocol' for the papers' rows of a family
    whose default departs from them, and 'ANIL (default: promp-lvc)' for that default."""
    algo, _, kind = method.partition("+")
    if kind:
        return f"{algo.upper()}, " + ("papers' protocol" if kind == "paper" else kind)
    setup = (cell or {}).get("setup")
    return f"{algo.upper()} (default: {setup})" if setup else algo.upper()


def _target(report: dict, env: str, algo: str) -> float | None:
    """The number a cell after one step is held to: the ANIL paper's mean (Table 2) for its families, else, for both
    algorithms, the MAML paper's result files' (the Ant families, which the ANIL paper does not report)."""
    paper = report["references"]["anil_paper_table2"][algo.split("+")[0]].get(env)
    if paper is not None:
        return paper[0]
    files = report["references"]["maml_paper_curves"].get(env)
    return files[1] if files is not None else None


def _met(report: dict, env: str, algo: str) -> bool | None:
    """Whether our mean return after one step reaches the cell's target (`_target`; higher is better); `algo` may be
    a variant's method key, compared with its algorithm's number."""
    target = _target(report, env, algo)
    cell = _cell(report, env, algo)
    if cell is None or target is None:
        return None
    return cell["mean"]["return_step_1"] >= target


def _partial(report: dict, env: str, method: str) -> str:
    """'' for a cell over all the grid's seeds; else ', so far: 2 of 3 seeds' (a verdict that may still change).
    A variant with one seed on a family whose algorithm already reaches the paper is a no-regression check by
    design (issue 34 asks one seed there): ', one seed: a no-regression check'."""
    cell, expected = _cell(report, env, method), len(report.get("seeds", (0, 1, 2)))  # reports before the key: 3
    if not cell or len(cell["seeds"]) >= expected:
        return ""
    algo = method.split("+")[0]
    if method != algo and len(cell["seeds"]) == 1 and _met(report, env, algo):
        return ", one seed: a no-regression check"
    return f", so far: {len(cell['seeds'])} of {expected} seeds"


def headline(root: Path) -> str:
    """Return after one adaptation step, ours against the papers, per family and algorithm (from the grid report)."""
    report = _grid(root)
    refs = report["references"]
    rows = ["| family | method | ours: return after 1 step (seeds) | ANIL paper, Table 2 | reached | "
            "MAML paper's result files |", "| --- | --- | --- | --- | --- | --- |"]
    for env in report["envs"]:
        for algo in ALGOS:
            paper = refs["anil_paper_table2"][algo].get(env)
            # the MAML files' number: MAML's reference, and both algorithms' target where the ANIL paper has none
            files = refs["maml_paper_curves"].get(env) if algo == "maml" or paper is None else None
            for method in _methods(report, env, algo):
                cell = _cell(report, env, method)
                ours = (f"{cell['mean']['return_step_1']:.1f} ± {cell['std']['return_step_1']:.1f} "
                        f"({len(cell['seeds'])})" if cell else "not run")
                met = {True: "yes", False: "**no**", None: "-"}[_met(report, env, method)] + _partial(report, env,
                                                                                                   method)
                rows.append(f"| {FAMILY_TITLES.get(env, env)} | {_label(method, cell)} | {ours} | "
                            f"{f'{paper[0]:.1f} ± {paper[1]:.1f}' if paper else '-'} | {met} | "
                            f"{f'{files[1]:.1f}' if files else ''} |")
    return "\n".join(rows) + f"\n\nMean ± std over seeds of each seed's mean over the held-out tasks; " \
                             f"{refs['anil_paper_table2_note']}. MAML result files: {refs['maml_paper_curves_note']}."


def status(root: Path) -> str:
    """One line: how many of the paper's cells the grid reaches, and which it does not; a default above its target
    on fewer seeds than the grid's (its runs still training) is in progress, never counted as reached (issue 52: a
    cell counts once all its seeds finished)."""
    report = _grid(root)
    verdicts = {(env, algo): _met(report, env, algo) for env in report["envs"] for algo in ALGOS}
    unfinished = {k: _partial(report, *k)[len(", so far: "):] for k, v in verdicts.items()
                  if v and _partial(report, *k).startswith(", so far")}  # short so far: not reached, as it stands
    judged = {k: v for k, v in verdicts.items() if v is not None}
    in_table = {k: v for k, v in judged.items() if report["references"]["anil_paper_table2"][k[1]].get(k[0])}
    by_files = {k: v for k, v in judged.items() if k not in in_table}

    def reached(cells: dict) -> int:
        return sum(v and k not in unfinished for k, v in cells.items())

    def short_of(cells: dict) -> list[str]:
        return [f"{FAMILY_TITLES.get(env, env)} {algo.upper()}" for (env, algo), v in cells.items()
                if not v and (env, algo) not in unfinished]

    short = short_of(in_table)
    missing = report.get("missing") or []
    line = (f"**Status:** {reached(in_table)} of {len(in_table)} cells of the ANIL paper's table reached after "
            f"one adaptation step; not reached: {', '.join(short) if short else 'none'}")
    if by_files:  # the Ant families: held to the MAML paper's result files
        short_files = short_of(by_files)
        line += (f"; {reached(by_files)} of {len(by_files)} cells held to the MAML paper's result files "
                 f"reached; not reached: {', '.join(short_files) if short_files else 'none'}")
    def variants(env: str, algo: str) -> list[str]:  # the tries beyond the default (the papers' rows are none)
        return [m for m in _methods(report, env, algo)[1:] if not m.endswith("+paper")]

    rescued = [f"{FAMILY_TITLES.get(env, env)} {_label(m)}" + (f" ({_partial(report, env, m)[2:]})"
                                                                if _partial(report, env, m) else "")
               for (env, algo), v in judged.items() if not v
               for m in variants(env, algo) if _met(report, env, m)]
    tried = any(variants(env, algo) for (env, algo), v in judged.items() if not v)
    if tried:
        line += f"; reached with a variant: {', '.join(rescued) if rescued else 'none yet'}"
    if unfinished:
        line += "; in progress: " + ", ".join(f"{FAMILY_TITLES.get(env, env)} {algo.upper()} ({seeds})"
                                              for (env, algo), seeds in unfinished.items())
    return line + (f"; missing runs: {', '.join(missing)}." if missing else ".")


def _cpu_features(machine: dict) -> str:
    """', AVX-512 and bfloat16 units' or ', no AVX-512 or bfloat16 units': what doubles these timings from one
    machine to the next (benchmarks/performance.py records the CPU's flags)."""
    if "cpu_features" not in machine:
        return ""
    have = set(machine["cpu_features"])
    if {"avx512f", "avx512_bf16"} <= have or "amx_bf16" in have:
        return " with AVX-512 and bfloat16 units"
    return " with AVX-512, no bfloat16 units" if "avx512f" in have else " without AVX-512 or bfloat16 units"


def speed(root: Path) -> str:
    """The README's speed figures at the full cheetah-dir protocol, from benchmarks/performance.py's results."""
    r = json.loads((root / "benchmarks/results/speed/performance.json").read_text(encoding="utf-8"))
    s, it = r["sampler"], r["iteration"]
    rows = ["| at the full cheetah-dir protocol (40 tasks x 20 episodes x 200 steps) | ANIL | MAML |",
            "| --- | --- | --- |"]
    def split(m: dict) -> str:
        return (f"{m['time/iteration_s']:.1f}: {m['time/sampling_s']:.1f} / {m['time/adaptation_s']:.1f} / "
                f"{m['time/update_s']:.1f}")

    paper = r.get("iteration_paper")
    rule = it[ALGOS[0]].get("inner_optimizer", "sgd")  # recorded since the default learns its inner step sizes
    how = "ProMP" + {"meta-sgd": " + Meta-SGD", "kfo": " + KFO"}.get(rule, "")
    default = f"meta-iteration, the default ({how})" if paper else "meta-iteration"
    rows.append(f"| {default}: sampling / inner loop / update (s) | " + " | ".join(split(it[a]) for a in ALGOS) + " |")
    if paper:  # the papers' TRPO beside the default, measured in the same run (issue 52)
        rows.append("| meta-iteration, the papers' TRPO (`--config cheetah-dir-paper`) | "
                    + " | ".join(split(paper[a]) for a in ALGOS) + " |")
        rows.append("| update: the default's over the papers' TRPO | "
                    + " | ".join(f"{it[a]['update_over_paper']:.2f}x" for a in ALGOS) + " |")
    if "over_rollout" in it["anil"]:
        rows.append("| iteration over the physics alone (`mujoco.rollout`, one core, same env steps) | "
                    + " | ".join(f"{it[a]['over_rollout']:.2f}x" for a in ALGOS) + " |")
    rows.append("| peak memory (RSS) | "  # MiB measured; GB of 1e9 bytes shown
                + " | ".join(f"{it[a]['peak_rss_mb'] * 2**20 / 1e9:.2f} GB" for a in ALGOS) + " |")
    scale = r["scaling"]["meta_batch_size"]
    first_k, first_t = next(iter(scale.items()))
    last_k, last_t = list(scale.items())[-1]
    text = ("\n".join(rows) + f"\n\nSampler: {s['metarl_steps_per_s']:,.0f} env steps/s on both cores, "
            f"{s['metarl_over_naive']:.1f}x a naive gymnasium vector env. Scaling (ANIL): {int(last_k) // int(first_k)}x "
            f"the tasks cost {last_t / first_t:.1f}x the time. Measured by `{r['command']}` on {r['date']}, "
            f"{r['machine']['cpus']} CPUs{_cpu_features(r['machine'])} ([performance](docs/performance.md)).")
    gpu = root / "benchmarks/results/speed/device_speed_chunk40.json"
    if gpu.is_file():  # benchmarks/device_speed.py on a GPU, the whole meta-batch in one chunk
        g = json.loads(gpu.read_text(encoding="utf-8"))
        runs = {r_["algo"]: r_ for r_ in g["runs"] if r_["device"] == "cuda"}
        if set(ALGOS) <= set(runs):
            name = runs[ALGOS[0]]["gpu"]
            text += (f" On an {name} (`device: cuda`, `task_chunk: 40`), with the papers' TRPO, the update takes "
                     + " and ".join(f"{runs[a]['update_s']:.2f} s ({a.upper()})" for a in ALGOS)
                     + ", and the meta-iteration "
                     + " and ".join(f"{runs[a]['iteration_s']:.1f} s" for a in ALGOS)
                     + f", the simulator's time on {g['sampler_threads']} threads (`{g['command']}`, {g['date']}).")
    return text


def include(root: Path, path: str, page: Path) -> str:
    """The content of a generated file (a report or a benchmark's table), its own title line dropped, and a link
    to it relative to `page`."""
    text = (root / path).read_text(encoding="utf-8").strip("\n")
    depth = len(page.resolve().relative_to(root.resolve()).parts) - 1
    link = f"[`{path}`]({'../' * depth}{path})"
    if not path.endswith(".md"):  # source code (a tested example): shown whole, as a code block
        return f"```{CODE_LANGUAGES.get(Path(path).suffix, '')}\n{text}\n```\n\n<sub>The file {link}.</sub>"
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = rebase_links("\n".join(lines).strip("\n"), (root / path).parent, page.parent)
    return moved_scripts(body, root) + f"\n\n<sub>Generated file: {link}.</sub>"


SCRIPT = re.compile(r"\bbenchmarks/([a-z0-9_]+\.py)\b")


def moved_scripts(text: str, root: Path) -> str:
    """`benchmarks/NAME.py` in a file written before the studies moved to benchmarks/studies/ named where the script
    is now, so that every command a page shows runs as it reads."""
    def where(match: re.Match) -> str:
        name = match.group(1)
        moved = not (root / "benchmarks" / name).is_file() and (root / "benchmarks" / "studies" / name).is_file()
        return f"benchmarks/studies/{name}" if moved else match.group(0)

    return SCRIPT.sub(where, text)


RELATIVE_LINK = re.compile(r"(\]\()(?![a-z]+:|/|#)([^)\s]+)(\))")


def rebase_links(text: str, source_dir: Path, page_dir: Path) -> str:
    """Markdown links and images relative to `source_dir` (an included file's folder) made relative to `page_dir`,
    so a figure beside a report still shows in the page that includes it."""
    def rebase(match: re.Match) -> str:
        target = os.path.relpath(source_dir.resolve() / match.group(2), page_dir.resolve())
        return match.group(1) + Path(target).as_posix() + match.group(3)

    return RELATIVE_LINK.sub(rebase, text)


GENERATORS: dict[str, Callable[[Path], str]] = {"config-keys": config_keys, "metrics": metrics,
                                                "families": families, "headline": headline, "status": status,
                                                "speed": speed, "layout": layout}


def render(name: str, root: Path, page: Path) -> str:
    """The body of the section NAME as it should read on `page`."""
    if name.startswith("include "):
        return include(root, name.removeprefix("include ").strip(), page)
    if name.startswith("config-keys "):  # the keys starting with a prefix
        return config_keys(root, name.removeprefix("config-keys ").strip())
    if name.startswith("metrics "):  # the tags containing a text
        return metrics(root, name.removeprefix("metrics ").strip())
    if name not in GENERATORS:
        raise ValueError(f"{page}: unknown generated section {name!r}; known: {', '.join(GENERATORS)}, include PATH")
    return GENERATORS[name](root)


def refresh(text: str, root: Path, page: Path) -> str:
    """`text` with every generated section rewritten from its source."""
    def one(match: re.Match) -> str:
        return f"{match.group(1)}{render(match.group('name'), root, page).rstrip()}\n{match.group(4)}"

    return SECTION.sub(one, text)


def stale_sections(root: Path = REPO) -> list[str]:
    """'page: section' for every generated section that differs from what its source gives now."""
    stale = []
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        for match in SECTION.finditer(text):
            want = render(match.group("name"), root, page).rstrip() + "\n"
            if match.group("body") != want:
                stale.append(f"{page.relative_to(root)}: {match.group('name')}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metarl.pages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only list stale sections; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_sections()
        for line in stale:
            print(f"stale: {line}")
        return 1 if stale else 0
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = refresh(text, REPO, page)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"regenerated {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
