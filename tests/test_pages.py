"""The pages stay honest: generated sections match their sources, no hand-typed figure outside them, a short README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from metarl import pages

REPO = Path(__file__).resolve().parents[1]
# A figure typed by hand: a decimal number or a ± outside generated sections, code blocks and inline code.
# Section numbers of citations (sec. 5.3, appendix A.2) are not figures.
FIGURE = re.compile(r"(?<![\w.\-])[-+]?\d+\.\d+(?![\w.])|±")
CITATION = re.compile(r"(sec\.|section|appendix|alg\.)\s*$", re.I)


def _prose(text: str) -> str:
    """`text` without generated sections, fenced code blocks, inline code and HTML comments."""
    text = pages.SECTION.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def hand_typed_figures(text: str) -> list[str]:
    prose = _prose(text)
    return [m.group(0) for m in FIGURE.finditer(prose) if not CITATION.search(prose[max(0, m.start() - 12):m.start()])]


def test_every_generated_section_is_current():
    stale = pages.stale_sections()
    assert stale == [], f"regenerate with `python -m metarl.pages`: {stale}"


def test_no_page_has_a_hand_typed_figure_outside_its_generated_sections():
    found = {str(p.relative_to(REPO)): hand_typed_figures(p.read_text(encoding="utf-8")) for p in pages.pages()}
    assert {page: figs for page, figs in found.items() if figs} == {}


def test_the_figure_check_catches_a_typed_number_and_spares_generated_ones():
    typed = "ANIL reaches 155.6 after one step.\n"
    generated = "<!-- BEGIN generated: status -->\nANIL 155.6 ± 76.9\n<!-- END generated: status -->\n"
    assert hand_typed_figures(typed) == ["155.6"]
    assert hand_typed_figures(generated + "see `x = 0.1` and Finn et al., sec. 5.3\n") == []


def test_the_readme_is_short_and_every_page_it_links_exists():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)\)", readme)
    assert links and [link for link in links if not (REPO / link).exists()] == []


def test_a_stale_section_is_reported_and_refresh_rewrites_it(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "data.md").write_text("# Title\n\n| a |\n| --- |\n| 1.5 |\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("intro\n<!-- BEGIN generated: include data.md -->\nold table\n<!-- END generated: include data.md -->\n")
    assert pages.stale_sections(tmp_path) == ["docs/page.md: include data.md"]
    page.write_text(pages.refresh(page.read_text(), tmp_path, page))
    assert pages.stale_sections(tmp_path) == []
    body = page.read_text()
    assert "| 1.5 |" in body and "# Title" not in body and "](../data.md)" in body
    (tmp_path / "data.md").write_text("| a |\n| --- |\n| 2.5 |\n")  # the source changes: the page is stale again
    assert pages.stale_sections(tmp_path) == ["docs/page.md: include data.md"]


def test_an_unknown_generator_is_an_error_naming_it(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("<!-- BEGIN generated: nope -->\n<!-- END generated: nope -->\n")
    with pytest.raises(ValueError, match="unknown generated section 'nope'"):
        pages.stale_sections(tmp_path)


def test_the_config_table_lists_every_config_key():
    from metarl.config import Config
    import dataclasses

    table = pages.config_keys(REPO)
    assert [f"`{f.name}`" for f in dataclasses.fields(Config)] == re.findall(r"^\| (`\w+`) \|", table, re.M)


def test_config_keys_with_a_prefix_lists_only_those_keys():
    table = pages.render("config-keys promp_", REPO, REPO / "docs" / "estimators.md")
    keys = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)
    assert keys and all(k.startswith("promp_") for k in keys) and "promp_lr" in keys


def test_the_headline_puts_a_variants_row_under_its_algorithm_and_the_status_names_what_it_reaches(tmp_path):
    from metarl import pages

    report = json.loads((pages.REPO / pages.GRID_REPORT).read_text())
    report["missing"] = []  # the published grid's runs still training are not this test's subject
    paper = report["references"]["anil_paper_table2"]["anil"]["cheetah-dir"][0]

    def cell(seeds, value, setup=None):
        return {"seeds": seeds, "mean": {"return_step_1": value}, "std": {"return_step_1": 2.0},
                **({"setup": setup} if setup is not None else {})}

    # cheetah-dir's default (ProMP + LVC) short of the paper, the papers' own rows, and a variant that reaches it
    report["cells"]["cheetah-dir"] = {"anil": cell([0, 1, 2], paper - 10.0, "promp-lvc"),
                                      "anil+paper": cell([0, 1, 2], paper - 100.0, ""),
                                      "anil+dice": cell([0, 1, 2], paper + 1.0),
                                      "maml": cell([0, 1, 2], -5.0, "promp-lvc"),
                                      "maml+kfo": cell([0], -5.0)}
    (tmp_path / pages.GRID_REPORT).parent.mkdir(parents=True)
    (tmp_path / pages.GRID_REPORT).write_text(json.dumps(report))
    rows = [line.split(" | ") for line in pages.headline(tmp_path).splitlines() if line.startswith("| Half")]
    methods = [row[1] for row in rows[:5]]
    assert methods == ["ANIL (default: promp-lvc)", "ANIL, dice", "ANIL, papers' protocol",
                       "MAML (default: promp-lvc)", "MAML, kfo"]
    assert rows[1][2] == f"{paper + 1.0:.1f} ± 2.0 (3)" and rows[1][4] == "yes"
    assert rows[4][4] == "**no**, so far: 1 of 3 seeds"  # a cell short of the grid's seeds says so
    status = pages.status(tmp_path)
    # the status judges the default rows (what `metarl train --env cheetah-dir` gives), never the papers' rows
    assert "not reached: HalfCheetah-Direction ANIL, HalfCheetah-Direction MAML" in status
    assert "reached with a variant: HalfCheetah-Direction ANIL, dice." in status
    # a variant that reaches the number on fewer seeds than the grid's is named with its count
    report["cells"]["cheetah-dir"]["maml+kfo"]["mean"]["return_step_1"] = 1000.0
    (tmp_path / pages.GRID_REPORT).write_text(json.dumps(report))
    assert ("reached with a variant: HalfCheetah-Direction ANIL, dice, HalfCheetah-Direction MAML, kfo "
            "(so far: 1 of 3 seeds).") in pages.status(tmp_path)
    # the papers' rows are no try at rescuing a cell: with no other variant the status says nothing of variants
    del report["cells"]["cheetah-dir"]["anil+dice"], report["cells"]["cheetah-dir"]["maml+kfo"]
    (tmp_path / pages.GRID_REPORT).write_text(json.dumps(report))
    assert "variant" not in pages.status(tmp_path)
    # one seed of a variant where the algorithm itself reaches the paper is a no-regression check, not a partial cell
    vel_anil = report["references"]["anil_paper_table2"]["anil"]["cheetah-vel"][0]
    report["cells"]["cheetah-vel"]["anil"]["mean"]["return_step_1"] = vel_anil + 1.0
    report["cells"]["cheetah-vel"]["anil+promp-lvc"] = {"seeds": [0], "mean": {"return_step_1": vel_anil + 2.0},
                                                        "std": {"return_step_1": 0.0}}
    (tmp_path / pages.GRID_REPORT).write_text(json.dumps(report))
    vel = [line.split(" | ") for line in pages.headline(tmp_path).splitlines() if line.startswith("| HalfCheetah-Vel")]
    assert vel[0][1] == "ANIL" and vel[1][1] == "ANIL, promp-lvc" and vel[1][4] == "yes, one seed: a no-regression check"
    # a default above the paper on one seed of three (a new default, its seeds training) is in progress: neither
    # reached nor short, and the cells still count six
    report["cells"]["cheetah-dir"]["maml"] = cell([0], 1000.0, "promp-lvc-meta-sgd-kl0.5")
    (tmp_path / pages.GRID_REPORT).write_text(json.dumps(report))
    status = pages.status(tmp_path)
    assert "of 6 cells" in status and "in progress: HalfCheetah-Direction MAML (1 of 3 seeds)" in status
    assert "not reached: HalfCheetah-Direction ANIL;" in status
    assert int(status.split("**Status:** ")[1].split(" ")[0]) == 4  # cheetah-vel's and nav2d's; neither cheetah-dir


def test_every_relative_link_and_figure_of_a_page_points_at_a_file():
    """Included reports bring their figures' links along, rebased to the including page."""
    broken = []
    for page in pages.pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for match in pages.RELATIVE_LINK.finditer(text):
            target = match.group(2).split("#")[0]
            if target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_an_included_figure_link_is_rebased_to_the_including_page(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("# R\n![a](fig.png) [b](https://x.org/y) [c](#top)\n")
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    body = pages.include(tmp_path, "out/report.md", page)
    assert "![a](../out/fig.png) [b](https://x.org/y) [c](#top)" in body


def test_every_script_a_page_names_exists():
    """A command shown on a page runs as it reads: its script is where the page says (a study written before the
    studies moved to benchmarks/studies/ is shown with the script's present path)."""
    missing = {}
    for page in pages.pages():
        for script in re.findall(r"\bpython3? (benchmarks/[\w/]+\.py)", page.read_text(encoding="utf-8")):
            if not (REPO / script).is_file():
                missing.setdefault(str(page.relative_to(REPO)), set()).add(script)
    assert not missing


def test_ant_cells_are_held_to_the_maml_files_for_both_algorithms_and_counted_apart_from_the_anil_table(tmp_path):
    from metarl import pages

    report = json.loads((pages.REPO / pages.GRID_REPORT).read_text())
    report["missing"] = []
    report["references"]["maml_paper_curves"]["ant-vel"] = [30.6, 96.7, 100.1, 101.4]  # as the report writes them
    report["envs"] = [*report["envs"], "ant-vel"]
    report["cells"]["ant-vel"] = {"anil": {"seeds": [0], "mean": {"return_step_1": 97.0}, "std": {"return_step_1": 0}},
                                  "maml": {"seeds": [0], "mean": {"return_step_1": 90.0}, "std": {"return_step_1": 0}}}
    (tmp_path / pages.GRID_REPORT).parent.mkdir(parents=True)
    (tmp_path / pages.GRID_REPORT).write_text(json.dumps(report))
    rows = [line.split(" | ") for line in pages.headline(tmp_path).splitlines() if line.startswith("| Ant-Velocity")]
    assert [(r[1], r[3], r[4].split(",")[0], r[5].strip(" |")) for r in rows] == [("ANIL", "-", "yes", "96.7"),
                                                                      ("MAML", "-", "**no**", "96.7")]
    status = pages.status(tmp_path)
    before = pages.status(pages.REPO)
    assert status.startswith(before.split(";")[0])  # the ANIL table's count is unchanged by the Ant cells
    # ANIL above the files' number on one seed of three is in progress, not reached; MAML below it is not reached
    assert "0 of 2 cells held to the MAML paper's result files reached; not reached: Ant-Velocity MAML" in status
    assert "in progress: " in status and "Ant-Velocity ANIL (1 of 3 seeds)" in status.split("in progress: ")[1]
    for algo in ("anil", "maml"):
        report["cells"]["ant-vel"][algo]["seeds"] = [0, 1, 2]
    (tmp_path / pages.GRID_REPORT).write_text(json.dumps(report))
    assert "1 of 2 cells held to the MAML paper's result files reached; not reached: Ant-Velocity MAML" in \
        pages.status(tmp_path)
