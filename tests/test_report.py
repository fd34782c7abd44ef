"""sealbench.report: the results-table contract, compare, leaderboard, plots and migrate.

Synthetic run folders are built with make_row in tmp dirs (several groups, missing cells, ties,
ceiling and reference rows, different eval sets, an unfinished and an old-format folder, nested
depth); migration runs on copies of the committed benchmarks/results folders."""
from __future__ import annotations

import io
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from sealbench.report import compare, leaderboard, migrate, plots
from sealbench.report.results import (COLUMNS, continual_rows, csv_text, find_run_dirs, jsonl_text, load_results,
                                      make_row, read_run_rows, reference_rows, rows_to_frame, run_markdown)

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "benchmarks" / "results"
DATA = REPO.parent / "shared" / "data"
PNG = b"\x89PNG\r\n\x1a\n"
E1, E2 = "seal-eval-20-aaaa1111", "seal-eval-20-bbbb2222"


# ----------------------------------------------------------------------------------- builders
def squad(run_id, contender, metric="accuracy", value=0.5, ci=0.1, n=20, unit="passages", **kw):
    base = dict(run_id=run_id, task="seal_squad_nocontext", protocol="single", model="tiny-lm", grader="match",
                eval_set=E1, device="cpu: test x2", seed=0, written="2026-01-01T00:00:00+00:00")
    lo, hi = (value - ci, value + ci) if ci is not None else (math.nan, math.nan)
    return make_row(**{**base, **kw}, contender=contender, metric=metric, value=value, ci_low=lo, ci_high=hi,
                    n=n, unit=unit)


def write_run(folder: Path, rows: list[dict], config: dict | None = None) -> Path:
    """A finished run folder as the runner's store writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or {"task": rows[0]["task"]}))
    (folder / "manifest.json").write_text(json.dumps({"seed": 0}))
    (folder / "summary.jsonl").write_text(jsonl_text(rows))
    (folder / "summary.csv").write_text(csv_text(rows))
    (folder / "summary.md").write_text(run_markdown(rows))
    (folder / "COMPLETE").touch()
    return folder


def run_a():
    r = "squad-a"
    rows = [squad(r, "base", value=0.30), squad(r, "passage", value=0.40), squad(r, "self-notes", value=0.40),
            squad(r, "seal", value=0.55, ci=0.05), squad(r, "in-context", value=0.80, role="ceiling"),
            squad(r, "seal", metric="micro_accuracy", value=0.5, n=90, unit="questions"),
            squad(r, "seal", metric="accuracy_diff", value=0.25, vs="base", p_value=0.01),
            squad(r, "passage", metric="accuracy_diff", value=0.10, vs="base", p_value=0.20)]
    rows += [squad(r, c, metric="seconds_per_edit", value=s, ci=1.0, unit="edits")
             for c, s in (("base", 2.0), ("passage", 9.0), ("seal", 12.5))]
    rows += [squad(r, "seal", metric=m, value=s, ci=0.5, unit="edits")
             for m, s in (("train_s", 7.0), ("generate_s", 3.0))]
    return rows


def build(root: Path) -> Path:
    """Every shape a report must handle, under `root` (some nested two levels deep)."""
    write_run(root / "squad-a", run_a(), {"task": "seal_squad_nocontext", "train": {"epochs": 2, "lr": 0.001}})
    write_run(root / "nested" / "deeper" / "squad-b",
              [squad("squad-b", "base", value=0.30, ci=0.02), squad("squad-b", "teacher-notes", value=0.50, ci=0.02),
               squad("squad-b", "seal", value=0.40, ci=0.02)],
              {"task": "seal_squad_nocontext", "train": {"epochs": 10, "lr": 0.001}})
    write_run(root / "squad-c", [squad("squad-c", "seal", value=0.95, eval_set=E2),
                                 squad("squad-c", "base", value=0.10, eval_set=E2)])
    arc = dict(task="seal_arc_mini", protocol="single", model="tiny-lm", grader="exact-grid", eval_set="arc-mini-4-cc",
               run_id="arc-a", n=4, unit="pairs", seed=0)
    write_run(root / "arc-a", [make_row(**arc, contender=c, metric="pairs_solved", value=0.0, ci_low=0.0, ci_high=0.0)
                               for c in ("icl", "ttt-self-edit", "oracle", "seal")]
              + [make_row(**dict(arc, unit="edits"), contender="oracle", metric="seconds_per_edit", value=30.0)])
    cpt = dict(task="seal_squad_nocontext", protocol="cpt", model="tiny-lm", grader="match", eval_set=E1,
               run_id="cpt-a", unit="passages")
    write_run(root / "cpt-a", [make_row(**cpt, contender=c, metric="accuracy", at=f"N={n}", value=v * n / 4,
                                        ci_low=0.0, ci_high=0.5, n=n) for c, v in (("base", 0.1), ("passage", 0.3))
                               for n in (1, 2, 4)])
    cont = dict(task="seal_squad_nocontext", protocol="continual", model="tiny-lm", grader="match", eval_set=E1,
                run_id="cont-a", contender="passage")
    mean = [[0.1, 0.1, 0.1], [0.5, None, None], [0.4, 0.6, None], [0.3, 0.5, 0.7]]
    std = [[0.05] * 3, [0.1, None, None], [0.1, 0.1, None], [0.1, 0.1, 0.1]]
    write_run(root / "cont-a", continual_rows(cont, mean, std, 4))
    rl = dict(task="seal_squad_nocontext", protocol="rl", model="tiny-lm", grader="match", run_id="rl-a",
              contender="seal")
    write_run(root / "rl-a", [make_row(**rl, eval_set="train-8-dd", metric=m, at=f"round={r}", value=v, ci_low=v - .05,
                                       ci_high=v + .05, n=24, unit="edits")
                              for r in (1, 2) for m, v in (("reward_all", 0.1 * r), ("reward_kept", 0.2 * r))]
              + [make_row(**rl, eval_set=E1, metric="heldout_accuracy", at=f"round={r}", value=0.1 + 0.05 * r,
                          ci_low=0.05 * r, ci_high=0.2 + 0.05 * r, n=12, unit="passages") for r in (0, 1, 2)])
    (root / "half-done").mkdir()
    (root / "half-done" / "config.json").write_text("{}")
    (root / "old-style").mkdir()
    (root / "old-style" / "summary.json").write_text(json.dumps({"contenders": {}}))
    return root


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def compared(reports, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cmp")
    return compare.compare(reports, out), out


@pytest.fixture(scope="module")
def board(reports, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("lb")
    return leaderboard.leaderboard([reports], out, data_dir=str(DATA)), out


class Page(HTMLParser):
    """Balanced-tag check, text, <img> sources, external references."""

    def __init__(self, text: str):
        super().__init__()
        self.stack, self.text, self.imgs, self.external = [], [], [], []
        self.feed(text)
        self.close()
        assert self.stack == [], self.stack

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in ("img", "meta"):
            self.stack.append(tag)
        if tag == "img":
            self.imgs.append(attrs["src"])
        if tag in ("link", "script") or str(attrs.get("src", "")).startswith("http"):
            self.external.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def md_section(md: str, heading: str) -> str:
    return md.split(heading, 1)[1].split("\n## ", 1)[0]


def md_rows(section: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|:")]


# ----------------------------------------------------------------------------------- rows
def test_make_row_fills_defaults_and_orders_columns():
    row = squad("r", "base")
    assert tuple(row) == COLUMNS and row["family"] == "squad" and row["role"] == "contender"
    assert row["at"] == "" and math.isnan(row["p_value"]) and row["vs"] == ""


@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "colour"), ({"metric": ""}, "metric"), ({"n": 2.5}, "n"), ({"n": True}, "n"),
    ({"value": "0.4"}, "value"), ({"protocol": "batch"}, "protocol"), ({"role": "judge"}, "role"),
    ({"unit": "apples"}, "unit"), ({"at": "N4"}, "at"), ({"task": "mystery"}, "family"), ({"seed": "0"}, "seed"),
    ({"p_value": 0.5}, "vs"), ({"n": -1}, "n")])
def test_make_row_names_the_bad_field(change, field):
    fields = dict(run_id="r", task="seal_squad_nocontext", protocol="single", model="m", contender="base",
                  grader="match", eval_set=E1, metric="accuracy", value=0.5, n=3, unit="passages")
    with pytest.raises(ValueError, match=repr(field)):
        make_row(**{**fields, **change})


def test_a_finished_folder_records_its_summary_format_and_a_newer_one_is_refused(tmp_path):
    from sealbench.schema import SUMMARY_FORMAT, ResultRow
    from sealbench.store import RunFolder, summary_format

    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.finish(run_a(), run_markdown(run_a()), n_units=0)
    assert summary_format(folder.path) == SUMMARY_FORMAT == 1
    assert len(read_run_rows(folder.path)) == len(run_a())
    assert set(ResultRow.model_fields) == set(COLUMNS)  # the files' columns are the model's fields
    (folder.path / "COMPLETE").write_text("2026-12-02T00:00:00+00:00\nsummary format: 7\n")
    with pytest.raises(ValueError, match="summary format 7 is not one this sealbench reads"):
        read_run_rows(folder.path)
    from sealbench.cli import main

    assert main(["grade", str(folder.path), "--grader", "em"]) == 2  # grade refuses it too, writing nothing
    assert "summary format: 7" in (folder.path / "COMPLETE").read_text()
    for bad in ("x", "0", "-2"):
        (folder.path / "COMPLETE").write_text(f"2026-12-02T00:00:00+00:00\nsummary format: {bad}\n")
        with pytest.raises(ValueError, match=f"'summary format: {bad}' is not a summary format"):
            read_run_rows(folder.path)
    (folder.path / "COMPLETE").write_text("2026-11-30T00:00:00+00:00\n")  # before the format line: 1
    assert summary_format(folder.path) == 1 and len(read_run_rows(folder.path)) == len(run_a())


@pytest.mark.parametrize("line, what", [
    ('{"run_id": "r", "n": "six"}', "not a result row"), ("5", "a JSON int, not a row object"),
    ('{"run_id": "r"', "not JSON")])
def test_a_summary_line_that_is_not_a_row_is_named_with_its_fix(tmp_path, line, what):
    """summary.jsonl is written whole, so any line that is not a valid row (the last one too, with
    or without its newline) is reported: file, line, what is wrong, the fix; no number is dropped."""
    rows = run_a()
    for tail in ("\n", ""):
        folder = write_run(tmp_path / f"run{len(tail)}", rows)
        text = (folder / "summary.jsonl").read_text()
        (folder / "summary.jsonl").write_text(text + line + tail)
        with pytest.raises(ValueError, match=rf"summary.jsonl:{len(rows) + 1}: .*{what}.*re-run"):
            read_run_rows(folder)
    bad = {**json.loads(jsonl_text(rows[:1])), "n": "six"}
    folder = write_run(tmp_path / "typed", rows)
    (folder / "summary.jsonl").write_text(json.dumps(bad) + "\n" + jsonl_text(rows[1:]))
    with pytest.raises(ValueError, match=r"summary.jsonl:1: not a result row \(field 'n' must be an int, got 'six'\)"):
        read_run_rows(folder)


def test_a_finished_folder_without_its_table_is_named_not_skipped(tmp_path):
    folder = write_run(tmp_path / "run", run_a())
    (folder / "summary.jsonl").unlink()
    (folder / "summary.csv").unlink()
    with pytest.raises(ValueError, match="is finished .COMPLETE. but has neither summary.jsonl nor summary.csv; re-run"):
        read_run_rows(folder)


def test_csv_and_jsonl_round_trip(tmp_path):
    rows = run_a() + continual_rows(dict(run_id="c", task="seal_squad_nocontext", protocol="continual", model="m",
                                         contender="passage", grader="match", eval_set=E1), [[0.1], [0.2]], None, 3)
    folder = write_run(tmp_path / "run", rows)
    expected = rows_to_frame(rows)
    back_csv = rows_to_frame(pd.read_csv(folder / "summary.csv", keep_default_na=False, na_values=[""]))
    pd.testing.assert_frame_equal(back_csv, expected)
    pd.testing.assert_frame_equal(read_run_rows(folder), expected)
    assert expected["ci_low"].isna().any() and list(expected.columns) == list(COLUMNS)
    (folder / "summary.jsonl").unlink()  # the CSV alone is enough
    pd.testing.assert_frame_equal(read_run_rows(folder), expected)


def test_rows_to_frame_tolerates_missing_optional_columns_and_nan():
    df = rows_to_frame([{"run_id": "r", "task": "seal_arc_mini", "metric": "pairs_solved", "value": None, "n": None}])
    assert list(df.columns) == list(COLUMNS) and df.loc[0, "family"] == "arc" and df.loc[0, "role"] == "contender"
    assert math.isnan(df.loc[0, "value"]) and pd.isna(df.loc[0, "n"]) and df.loc[0, "vs"] == ""


def test_find_and_load_runs_at_any_depth(reports):
    names = {p.relative_to(reports).as_posix() for p in find_run_dirs(reports)}
    assert {"nested/deeper/squad-b", "half-done", "old-style", "rl-a"} <= names
    df, skipped = load_results([reports, reports / "nested"])  # overlapping roots: rows kept once
    assert set(df["run_id"]) == {"squad-a", "squad-b", "squad-c", "arc-a", "cpt-a", "cont-a", "rl-a"}
    assert not df.duplicated(["run_id", "contender", "metric", "at", "vs"]).any()
    assert any(s.startswith("half-done: unfinished") for s in skipped)
    assert any(s.startswith("old-style") and "sealbench migrate" in s for s in skipped)
    assert not (df["run_id"] == "old-style").any()


def test_run_markdown_is_pandas_tables_with_n_beside_every_number():
    md = run_markdown(run_a())
    results = md_rows(md_section(md, "### results"))
    header, seal = results[0], next(r for r in results if r[0] == "seal")
    assert header[:2] == ["contender", "accuracy"] and seal[1] == "55.0 [50.0, 60.0] (20 passages)"
    assert any(r[0] == "in-context (open-book ceiling)" for r in results)
    assert "+25.0 [+15.0, +35.0] p=0.01 (20 passages)" in md
    timing = md_rows(md_section(md, "### time per edit"))
    assert timing[0][:2] == ["contender", "seconds_per_edit"]
    assert "12.50 [11.50, 13.50] (20 edits)" in md


# ----------------------------------------------------------------------------------- reference
@pytest.mark.skipif(not (DATA / "reference" / "seal_reference_results.json").exists(), reason="no shared data")
def test_reference_rows_map_seals_published_numbers():
    df = rows_to_frame(reference_rows(DATA))
    assert set(df["role"]) == {"reference"} and set(df["model"]) == {"Qwen2.5-7B (SEAL paper)"}
    assert set(df["grader"]) == {"gpt-4.1-judge"} and set(df["eval_set"]) == {"seal-eval-200-paper"}
    single = df[df["protocol"] == "single"].set_index("contender")["value"].to_dict()
    assert single == {"base": 0.3267, "passage": 0.3351, "self-notes": 0.3968, "teacher-notes": 0.4631, "seal": 0.4699}
    cpt = df[df["protocol"] == "cpt"].set_index("contender")
    assert set(cpt["at"]) == {"N=200"} and cpt.loc["seal", "value"] == 0.4384 and cpt.loc["base", "value"] == 0.3255
    cont = df[df["protocol"] == "continual"]
    assert len(cont[cont["metric"] == "accuracy"]) == 8 + sum(range(1, 9))  # row 0 + lower triangle
    final = cont[cont["metric"] == "final_accuracy"]["value"].iloc[0]
    assert final == pytest.approx(sum([0.1894, 0.219, 0.1641, 0.2372, 0.2206, 0.2745, 0.3349, 0.3397]) / 8)
    assert set(cont["n"]) == {64} and reference_rows(DATA / "nowhere") == []


# ----------------------------------------------------------------------------------- compare
def test_compare_writes_every_table(reports, compared):
    written, out = compared
    md = Path(written["md"]).read_text()
    results = rows_to_frame(pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""]))
    pd.testing.assert_frame_equal(results, load_results([reports])[0])
    assert set(results["run_id"]) == {"squad-a", "squad-b", "squad-c", "arc-a", "cpt-a", "cont-a", "rl-a"}
    # Group E1 single: contenders × runs, a missing contender is "–".
    group = md_section(md, f"## seal_squad_nocontext · single · tiny-lm · grader match · eval set {E1}")
    table = md_rows(group)
    assert table[0] == ["contender", "squad-a", "squad-b"]
    teacher = next(r for r in table if r[0] == "teacher-notes")
    assert teacher[1] == "–" and teacher[2].startswith("50.0 [48.0, 52.0] (20 passages)")
    assert "squad-c" not in group  # another eval set is another group
    assert "+25.0 [+15.0, +35.0] p=0.01 (20 passages)" in group
    runs = pd.read_csv(out / "runs.csv").set_index("run_id")
    assert runs.loc["squad-a", "config differs"] == "train.epochs=2"
    assert runs.loc["squad-b", "config differs"] == "train.epochs=10"
    assert "CPT: accuracy % against N — cpt-a" in md and "| N=1 " in md
    assert "forgetting matrix: passage — cont-a" in md and "50.0 ± 10.0" in md
    timing = md_section(md, "## seal_arc_mini · single")
    assert "seconds_per_edit" in timing and "30.00" in timing  # ARC rows have timing too
    assert "RL rounds" in md and "round=0" in md
    assert "half-done" in md and "old format" in md


def test_compare_html_is_self_contained_and_parses(compared):
    written, out = compared
    text = Path(written["html"]).read_text()
    page = Page(text)
    assert not page.external
    tables = pd.read_html(io.StringIO(text))
    assert len(tables) >= 10
    headline = next(t for t in tables if list(t.columns) == ["contender", "squad-a", "squad-b"])
    assert headline.set_index("contender").loc["passage", "squad-b"] == "–"
    assert sorted(page.imgs) == sorted(Path(p).relative_to(out).as_posix() for p in written["png"])
    for p in written["png"]:
        assert Path(p).read_bytes()[:8] == PNG and Path(p).stat().st_size > 5000
    kinds = {Path(p).name.split("_")[0] for p in written["png"]}
    assert kinds == {"bars", "cpt", "forgetting", "time", "rl"}
    assert "Every value is 0 here: no headline chart." in text  # the all-zero ARC group


def test_html_tables_are_pandas_layout_with_every_text_escaped():
    """report/pages.py: the table template gives pandas' to_html layout, and the template engine
    escapes every header, cell and hover text (no text reaches a page unescaped)."""
    from sealbench.report import pages

    plain = pd.DataFrame({"contender": ["a", "b"], "accuracy": ["1.0", "2.0"]})
    assert pages.table(plain) == plain.to_html(index=False, border=0)
    evil = pd.DataFrame({"<th>": ['<script>x</script>', 'say "hi" & go']})
    out = compare.html_table(evil, [True, False], ("<th>", ["it's <b>", "t"]))
    assert "<script>" not in out and "&lt;script&gt;" in out and "&lt;th&gt;" in out
    assert '<span title="it&#39;s &lt;b&gt;"><em>&lt;script&gt;x&lt;/script&gt;</em></span>' in out
    assert '<span title="t">say &#34;hi&#34; &amp; go</span>' in out
    page = compare.page("a <title>", "<p>body</p>")
    assert "<title>a &lt;title&gt;</title>" in page and "<body>\n<p>body</p>\n</body></html>\n" in page


def test_compare_without_finished_runs_exits_2(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    assert compare.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sealbench: error: no finished runs")


# ----------------------------------------------------------------------------------- leaderboard
def lb_tables(md: str) -> dict[str, list[list[str]]]:
    """'title · subtitle' -> rows of the group's first table (header first)."""
    out = {}
    for part in md.split("\n## ")[1:]:
        lines = part.splitlines()
        out[f"{lines[0]} · {lines[2]}"] = md_rows(part.split("<details>")[0])
    return out


def test_leaderboard_ranks_like_for_like_with_shared_ranks(board):
    written, out = board
    tables = lb_tables(Path(written["md"]).read_text())
    e1 = tables[f"seal_squad_nocontext · single · tiny-lm · grader match · eval set {E1}"]
    assert e1[0] == ["rank", "contender", "accuracy % (match) [95% CI]", "n", "Δ vs base (p)", "s/edit"]
    ranked = [(r[0], r[1]) for r in e1[1:] if r[0] != "–"]
    # seal (a) 55, teacher-notes (b) 50, passage/self-notes 40 tie, seal (b) 40 tie, base 30 x2 tie
    assert ranked[:2] == [("1", "seal (squad-a)"), ("2", "teacher-notes")]
    assert sorted(r for r, c in ranked[2:5]) == ["3", "3", "3"] and [r for r, _ in ranked[5:]] == ["6", "6"]
    assert all(r[3].endswith("passages") for r in e1[1:])
    seal = next(r for r in e1 if r[1] == "seal (squad-a)")
    assert seal[2] == "55.0 [50.0, 60.0]" and seal[4] == "+25.0 (p=0.01)" and seal[5] == "12.50"
    e2 = tables[f"seal_squad_nocontext · single · tiny-lm · grader match · eval set {E2}"]
    assert [r[:2] for r in e2[1:3]] == [["1", "seal"], ["2", "base"]]  # its own ranking, not E1's
    arc = tables["seal_arc_mini · single · tiny-lm · grader exact-grid · eval set arc-mini-4-cc"]
    assert [r[0] for r in arc[1:]] == ["1", "1", "1", "1"] and arc[0][2] == "pairs solved % (exact-grid) [95% CI]"
    continual = next(v for k, v in tables.items() if " continual " in k)
    assert [r[:2] for r in continual[1:] if r[0] != "–"] == [["1", "passage"]]  # one contender: still a table
    cpt = next(v for k, v in tables.items() if " cpt " in k)
    assert [r[1] for r in cpt[1:3]] == ["passage", "base"]  # ranked at the largest N
    assert any("at N=4" in k for k in tables)


def test_leaderboard_marks_ceiling_and_reference_without_rank(board):
    written, _ = board
    md = Path(written["md"]).read_text()
    e1 = lb_tables(md)[f"seal_squad_nocontext · single · tiny-lm · grader match · eval set {E1}"]
    marked = [r for r in e1[1:] if r[0] == "–"]
    assert ["–", "*in-context (open-book ceiling)*", "80.0 [70.0, 90.0]", "20 passages"] == marked[0][:4]
    if (DATA / "reference" / "seal_reference_results.json").exists():
        assert any(r[1] == "*seal (SEAL paper)*" and r[2] == "47.0" and r[3] == "200 passages" for r in marked)
        assert md.count("*SEAL paper*: SEAL's published numbers") >= 2  # the legend, once per group with them
    assert all(r[4] == "–" and r[5] == "–" for r in marked)


def test_leaderboard_says_when_contenders_cannot_be_separated(board):
    md = Path(board[0]["md"]).read_text()
    groups = {p.splitlines()[2]: p for p in md.split("\n## ")[1:] if len(p.splitlines()) > 2}
    assert leaderboard.SEPARATE not in groups[f"grader match · eval set {E2}"]  # 95 ± 10 vs 10 ± 10
    arc = groups["grader exact-grid · eval set arc-mini-4-cc"]
    assert f"{leaderboard.SEPARATE}: icl, ttt-self-edit, oracle, seal" in arc
    assert f"{leaderboard.SEPARATE}: seal (squad-a), teacher-notes" in groups[f"grader match · eval set {E1}"]


def test_leaderboard_html_is_self_contained_with_charts_and_hover_details(board):
    written, _ = board
    text = Path(written["html"]).read_text()
    page = Page(text)
    assert not page.external and page.imgs and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert "Every contender scores 0.0 (pairs solved %) in this group: no chart." in text
    assert 'alt="pairs solved %' not in text and 'alt="accuracy %, 95% CI"' in text
    assert 'title="run squad-b · device cpu: test x2 · config: train.epochs=10"' in text
    assert "<em>in-context (open-book ceiling)</em>" in text
    tables = pd.read_html(io.StringIO(text))
    assert all(len(t.columns) <= 7 for t in tables)  # fits a 1400 px screen


def test_leaderboard_is_deterministic(reports, board, tmp_path):
    written, out = board
    again = leaderboard.leaderboard([reports], tmp_path, data_dir=str(DATA))
    for name in ("md", "html"):
        assert Path(again[name]).read_bytes() == Path(written[name]).read_bytes()


def test_leaderboard_with_nothing_to_rank_exits_2(tmp_path, capsys):
    rows = [make_row(run_id="rl", task="seal_squad_nocontext", protocol="rl", model="m", contender="seal",
                     grader="match", eval_set="x", metric="reward_all", at="round=1", value=0.1, n=3, unit="edits")]
    write_run(tmp_path / "rl", rows)
    assert leaderboard.main([str(tmp_path), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sealbench: error: nothing to rank")
    assert not (tmp_path / "leaderboard.md").exists()


# ----------------------------------------------------------------------------------- plots
def test_plots_write_pngs_and_skip_empty_charts(reports, tmp_path):
    df, _ = load_results([reports])
    single = df[(df["run_id"] == "squad-a") & (df["metric"] == "accuracy")].assign(label=lambda d: d["contender"])
    made = [plots.bars(single, tmp_path / "bars.png", "t", "accuracy"),
            plots.cpt_curve(df[df["run_id"] == "cpt-a"], tmp_path / "cpt.png", "t"),
            plots.forgetting(df[(df["run_id"] == "cont-a") & (df["metric"] == "accuracy")], tmp_path / "f.png", "t"),
            plots.time_per_edit(df[df["run_id"] == "squad-a"], tmp_path / "time.png", "t"),
            plots.rl_rounds(df[df["run_id"] == "rl-a"], tmp_path / "rl.png", "t")]
    for path in made:
        assert path is not None and path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    zero = df[df["run_id"] == "arc-a"].assign(label=lambda d: d["contender"])
    assert plots.bars(zero[zero["metric"] == "pairs_solved"], tmp_path / "z.png", "t", "pairs_solved") is None
    assert plots.axis_label("pairs_solved") == "pairs solved %" and not (tmp_path / "z.png").exists()


# ----------------------------------------------------------------------------------- migrate
@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    if not COMMITTED.exists():
        pytest.skip("no committed benchmark results")
    root = tmp_path_factory.mktemp("migrate") / "results"
    shutil.copytree(COMMITTED, root)
    assert migrate.main([str(root)]) == 0
    return root


def old_folders(root: Path) -> list[Path]:
    return [p.parent for p in sorted(root.rglob("summary.json"))]


def test_migrate_copies_of_committed_folders_keep_every_headline(migrated):
    folders = old_folders(migrated)
    assert len(folders) >= 11
    for folder in folders:
        old = json.loads((folder / "summary.json").read_text())
        rows = read_run_rows(folder)
        assert (folder / "COMPLETE").exists() and (folder / "summary.md").read_text().startswith("# ")
        assert set(rows["run_id"]) == {folder.name} and (rows["eval_set"].str.startswith("legacy-")).all()
        def get(c, m, at="", vs=""):
            match = (rows["contender"] == c) & (rows["metric"] == m) & (rows["at"] == at) & (rows["vs"] == vs)
            return rows[match].iloc[0]

        if "rounds" in old:
            for rd in old["rounds"]:
                assert get("seal", "reward_all", f"round={rd['round']}")["value"] == rd["mean_reward_all"]["mean"]
            for h in old.get("heldout") or []:
                assert get("seal", "heldout_accuracy", f"round={h['round']}")["value"] == h["accuracy"]["mean"]
            continue
        for name, s in old["contenders"].items():
            if "pairs_solved" in s:
                r = get(name, "pairs_solved")
                assert (r["value"], r["n"], r["unit"]) == (s["pairs_solved"]["mean"], s["n_pairs"], "pairs")
            elif old["protocol"] == "cpt":
                n = str(s["n_at"])
                assert get(name, "accuracy", f"N={n}")["value"] == s["by_n"][n]["accuracy"]["mean"]
            elif old["protocol"] == "continual":
                r = get(name, "final_accuracy")
                assert (r["value"], r["ci_low"], r["n"]) == (s["accuracy"]["mean"], s["accuracy"]["ci_low"],
                                                             s["n_sequences"])
                assert get(name, "forgetting")["value"] == s["forgetting"]
                assert get(name, "accuracy", "after=1,item=0")["value"] == s["matrix_mean"][1][0]
            else:
                r = get(name, "accuracy")
                assert (r["value"], r["ci_low"], r["ci_high"], r["n"]) == tuple(
                    s["accuracy"][k] for k in ("mean", "ci_low", "ci_high", "n"))
                assert r["role"] == ("ceiling" if name == "in-context" else "contender")
                assert get(name, "seconds_per_edit")["value"] == pytest.approx(s["timing"]["total_s"]["median"])
        for name, d in (old.get("paired_vs_base") or {}).items():
            if old["protocol"] == "single":
                r = get(name, "accuracy_diff", vs="base")
                assert (r["value"], r["p_value"]) == (d["mean"], d["p_value"])


def test_migrate_is_idempotent_and_load_results_reads_the_new_files(migrated, capsys):
    before = {p: p.read_bytes() for p in migrated.rglob("summary.jsonl")}
    assert migrate.main([str(migrated)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(find_run_dirs(migrated))
    assert all(line.startswith(("already migrated", "unfinished")) for line in lines)
    assert before == {p: p.read_bytes() for p in migrated.rglob("summary.jsonl")}
    df, skipped = load_results([migrated])
    cpu = df[df["device"] == "cpu: AMD EPYC x2"]
    assert set(cpu["model"]) == {"SmolLM2-135M-Instruct"}
    assert {"single", "cpt", "continual", "rl"} <= set(cpu["protocol"])
    assert [s.split(":")[0] for s in sorted(skipped)] == ["gpu_runs_2026-11-25/seal-rl-embedded-e45a502fd9",
                                                          "gpu_runs_2026-11-25/seal-squad-nocontext-embedded-cc424430db"]
    assert "SEAL RL run without COMPLETE" in sorted(skipped)[0]
    assert "unfinished: no COMPLETE" in sorted(skipped)[1]  # a reason, not a bare path (issue 25)


def test_unmigrated_folders_are_reported_not_read(tmp_path):
    if not COMMITTED.exists():
        pytest.skip("no committed benchmark results")
    src = COMMITTED / "cpu_runs_2026-11-25" / "seal-squad-nocontext-embedded-14ea4cef27"
    shutil.copytree(src, tmp_path / "old" / src.name)
    for name in ("COMPLETE", "summary.jsonl", "summary.csv"):  # back to the old format (summary.json only)
        (tmp_path / "old" / src.name / name).unlink(missing_ok=True)
    df, skipped = load_results([tmp_path])
    assert df.empty and skipped == [f"old/{src.name}: old format, run `sealbench migrate {tmp_path}`"]
