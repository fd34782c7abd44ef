"""The runner and the store: plan -> units -> rows -> results table, resume, reuse by content,
one writer per folder, failures recorded and reported (knowledge family; tiny model unless the
test is about learning)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MADE_UP, MADE_UP_2, write_data_dir
from sealbench.config import RunConfig
from sealbench.runner import run
from sealbench.store import RESULTS, RunFolder, StoreError, read_rows

QUIET = dict(progress=False, say=lambda m: None)


def synthetic(n: int) -> list[dict]:
    """n made-up passages with unguessable answers."""
    out = []
    for i in range(n):
        out.append({"title": f"Vorlan {i}", "context": f"The Vorlan tower number {i} was built by Ildra Quen{i} "
                    f"in {1700 + i} and is {100 + i} metres tall.",
                    "questions": [{"question": f"Who built Vorlan tower {i}?", "answer": f"Ildra Quen{i}"},
                                  {"question": f"When was Vorlan tower {i} built?", "answer": str(1700 + i)}]})
    return out


@pytest.fixture
def data(tmp_path):
    return write_data_dir(tmp_path / "data", synthetic(5))


def cfg(tmp_path, data, **kw) -> RunConfig:
    base = dict(contenders=["base", "passage"], n_passages=2, epochs=1, max_answer_tokens=4, seed=0,
                data_dir=str(data), reports_dir=str(tmp_path / "reports"), edits_per_batch=4)
    return RunConfig(**{**base, **kw})


def results(folder: Path) -> list[dict]:
    return read_rows(folder / RESULTS)


def test_run_folder_is_complete_and_a_rerun_computes_nothing(tmp_path, data, tiny):
    r = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    f = r.folder
    for name in ("config.json", "manifest.json", "results.jsonl", "summary.jsonl", "summary.csv", "summary.md", "COMPLETE"):
        assert (f / name).exists(), name
    manifest = json.loads((f / "manifest.json").read_text())
    assert manifest["models"]["base"]["fingerprint"] == tiny.fingerprint
    assert {"torch", "transformers", "pydantic"} <= set(manifest["versions"]) and manifest["device_name"]
    assert r.n_computed == 4 and not r.failures
    table = [json.loads(line) for line in (f / "summary.jsonl").read_text().splitlines()]
    acc = [t for t in table if t["metric"] == "accuracy"]
    assert {t["contender"] for t in acc} == {"base", "passage"} and all(t["n"] == 2 for t in acc)
    again = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    assert again.folder == f and again.n_computed == 0 and len(results(f)) == 4


def test_growing_n_passages_computes_only_the_new_passage(tmp_path, data, tiny):
    first = run(cfg(tmp_path, data, n_passages=3), loaded=tiny, **QUIET)
    second = run(cfg(tmp_path, data, n_passages=4), loaded=tiny, **QUIET)
    assert second.folder != first.folder
    assert (second.n_units, second.n_reused, second.n_computed) == (8, 6, 2)
    rows = results(second.folder)
    reused = [r for r in rows if r.get("reused_from")]
    assert len(reused) == 6 and {r["reused_from"] for r in reused} == {first.folder.name}
    fresh = [r for r in rows if not r.get("reused_from")]
    assert len({r["passage_id"] for r in fresh}) == 1
    old = {r["key"]: r for r in results(first.folder)}
    assert all(r["questions"] == old[r["key"]]["questions"] for r in reused)


def test_adding_a_contender_computes_only_its_units(tmp_path, data, tiny):
    run(cfg(tmp_path, data, contenders=["base"]), loaded=tiny, **QUIET)
    r = run(cfg(tmp_path, data, contenders=["base", "passage"]), loaded=tiny, **QUIET)
    assert (r.n_reused, r.n_computed) == (2, 2)


def test_same_config_and_seed_give_the_same_rows(tmp_path, data, tiny):
    a = run(cfg(tmp_path / "a", data), loaded=tiny, **QUIET)
    b = run(cfg(tmp_path / "b", data), loaded=tiny, **QUIET)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("timing", "machine", "finished", "wall_s", "train")}
                          for r in rows]
    assert a.folder.name == b.folder.name
    assert strip(results(a.folder)) == strip(results(b.folder))
    table = lambda f: [{k: v for k, v in json.loads(x).items() if k != "written"}
                       for x in (f / "summary.jsonl").read_text().splitlines() if '"_s"' not in x]
    assert [t for t in table(a.folder) if not t["metric"].endswith("_s") and t["metric"] not in
            ("seconds_per_edit", "peak_mem_mb")] == [t for t in table(b.folder) if not t["metric"].endswith("_s")
                                                     and t["metric"] not in ("seconds_per_edit", "peak_mem_mb")]


def test_cpt_at_n1_is_the_single_protocols_unit(tmp_path, data, tiny):
    same = dict(epochs=1, batch_size=1, grad_accum_steps=1, contenders=["passage"])
    single = run(cfg(tmp_path, data, n_passages=1, **same), loaded=tiny, **QUIET)
    cpt = run(cfg(tmp_path, data, protocol="cpt", cpt_n=[1, 2], **same), loaded=tiny, **QUIET)
    (one,) = results(single.folder)
    rows = {r["n"]: r for r in results(cpt.folder)}
    assert rows[1]["key"] == one["key"] and rows[1].get("reused_from") == single.folder.name
    assert len(rows[2]["passage_ids"]) == 2 and rows[2]["n_train_sequences"] == 2


def test_continual_matrix_is_lower_triangular(tmp_path, data, tiny):
    r = run(cfg(tmp_path, data, protocol="continual", contenders=["passage"], steps=3, sequences=2, n_passages=3),
            loaded=tiny, **QUIET)
    rows = results(r.folder)
    assert len(rows) == 2 and all(x["status"] == "ok" for x in rows)
    for x in rows:
        m = x["matrix"]
        assert len(m) == 4 and all(v is not None for v in m[0])
        assert all((m[k][j] is None) == (j >= k) for k in range(1, 4) for j in range(3))
    cells = [json.loads(line) for line in (r.folder / "summary.jsonl").read_text().splitlines()]
    assert {"final_accuracy", "forgetting"} <= {c["metric"] for c in cells}


def test_failed_units_are_recorded_and_reported(tmp_path, tiny):
    notes = [{"title": MADE_UP["title"], "context": MADE_UP["context"], "completions": ["1. a fact"]}]
    data = write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2], notes)
    spec = tmp_path / "teacher.yaml"
    spec.write_text("name: teacher\nfamily: squad\nedits: file\nfile: notes/teacher.json\n")
    r = run(cfg(tmp_path, data, contenders=["base", str(spec)]), loaded=tiny, **QUIET)
    assert len(r.failures) == 1 and "no notes for passage" in r.failures[0]
    assert (r.folder / "COMPLETE").exists()  # every unit has a row; the failure is one of them
    failed = [x for x in results(r.folder) if x["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["error"]


def test_a_notes_file_contenders_units_do_not_depend_on_the_sampling_budget(tmp_path, tiny):
    """Cached notes are fixed text: a run with another notes budget (which the paper preset sets for
    self-notes) reuses the file contender's units instead of training them again."""
    notes = [{"title": p["title"], "context": p["context"], "completions": ["1. a fact"]} for p in (MADE_UP, MADE_UP_2)]
    data = write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2], notes)
    spec = tmp_path / "teacher.yaml"
    spec.write_text("name: teacher\nfamily: squad\nedits: file\nfile: notes/teacher.json\n")
    first = run(cfg(tmp_path, data, contenders=[str(spec)]), loaded=tiny, **QUIET)
    again = run(cfg(tmp_path, data, contenders=[str(spec)], notes_max_tokens=1024, seed=0), loaded=tiny, **QUIET)
    assert first.n_computed == 2 and not first.failures
    assert again.folder != first.folder and (again.n_reused, again.n_computed) == (2, 0)


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, data, tiny):
    first = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    config = json.loads((first.folder / "config.json").read_text())
    with RunFolder.open(tmp_path / "reports", first.folder.name, config):
        with pytest.raises(StoreError, match=r"is in use by pid \d+"):
            run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    assert run(cfg(tmp_path, data), loaded=tiny, **QUIET).n_computed == 0


def test_a_corrupt_row_names_file_and_line_and_can_be_quarantined(tmp_path, data, tiny):
    r = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    path = r.folder / RESULTS
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(StoreError, match=r"results.jsonl:2 is not a valid row"):
        read_rows(path)
    rows = read_rows(path, quarantine=True)
    assert len(rows) == 4 and (r.folder / "results.jsonl.corrupt").read_text().strip() == "{not json"


def test_replaced_weights_at_the_same_path_are_new_results(tmp_path, data):
    from sealbench.engine.models import load_model, tiny_random_model

    ckpt = tmp_path / "ckpt"
    for seed in (0, 1):
        tiny = tiny_random_model(seed)
        tiny.model.save_pretrained(ckpt)
        tiny.tokenizer.save_pretrained(ckpt)
        loaded = load_model(str(ckpt), device="cpu")
        r = run(cfg(tmp_path, data, model=str(ckpt)), loaded=loaded, **QUIET)
        if seed == 0:
            first, fp = r.folder, loaded.fingerprint
    assert loaded.fingerprint != fp and r.folder != first and r.n_reused == 0


@pytest.mark.slow
def test_a_killed_run_resumes_without_lost_or_duplicated_units(tmp_path, data):
    from sealbench.engine.models import tiny_random_model

    ckpt = tmp_path / "ckpt"
    tiny = tiny_random_model(0)
    tiny.model.save_pretrained(ckpt)
    tiny.tokenizer.save_pretrained(ckpt)
    reports = tmp_path / "reports"
    cmd = [sys.executable, "-m", "sealbench.cli", "run", "--model", str(ckpt), "--contender", "base", "passage",
           "--n-passages", "5", "--epochs", "3", "--max-answer-tokens", "4", "--data-dir", str(data),
           "--reports-dir", str(reports), "--edits-per-batch", "1", "--threads", "1", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        files = list(reports.glob("*/results.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_rows(files[0]))
    assert 3 <= done < 10
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    rows = read_rows(files[0])
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 10 and (files[0].parent / "COMPLETE").exists()


@pytest.mark.slow
def test_the_passage_contender_learns_made_up_facts(tmp_path, embedded):
    data = write_data_dir(tmp_path / "data", [MADE_UP])
    r = run(RunConfig(contenders=["base", "passage"], n_passages=1, epochs=10, seed=0, data_dir=str(data),
                      reports_dir=str(tmp_path / "reports")), loaded=embedded, **QUIET)
    table = {(t["contender"], t["metric"]): t["value"] for t in
             (json.loads(x) for x in (r.folder / "summary.jsonl").read_text().splitlines())}
    assert table[("passage", "accuracy")] > table[("base", "accuracy")]
    assert table[("passage", "accuracy")] >= 0.5


def test_a_run_with_failed_units_exits_1_and_says_where(tmp_path, tiny, capsys):
    """Every unit fails (the notes file covers none of the passages): exit 1, one line naming how
    many and where; --allow-failures exits 0. The folder is still finished (every unit has a row)."""
    from sealbench.cli import main

    ckpt = tmp_path / "ckpt"
    tiny.model.save_pretrained(ckpt)
    tiny.tokenizer.save_pretrained(ckpt)
    notes = [{"title": "x", "context": "not one of the passages", "completions": ["1. a"]}]
    data = write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2], notes)
    spec = tmp_path / "teacher.yaml"
    spec.write_text("name: teacher\nfamily: squad\nedits: file\nfile: notes/teacher.json\n")
    argv = ["run", "--model", str(ckpt), "--contender", str(spec), "--n-passages", "2", "--epochs", "1",
            "--max-answer-tokens", "4", "--data-dir", str(data), "--reports-dir", str(tmp_path / "r"), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 of 2 unit(s) failed" in err and "results.jsonl" in err and "no notes for passage" in err
    assert main(argv + ["--allow-failures"]) == 0


def test_changed_gold_answers_under_the_same_path_change_exactly_their_units(tmp_path, tiny):
    """Identity by content: the same data path with one passage's gold answers changed gives a new
    run id and eval set, and new keys for that passage's units only (the others are reused)."""
    passages = synthetic(3)
    data = write_data_dir(tmp_path / "data", passages)
    first = run(cfg(tmp_path, data, n_passages=3), loaded=tiny, **QUIET)
    keys1 = {(r["contender"], r["passage_id"]): r["key"] for r in results(first.folder)}
    passages[1]["questions"][0]["answer"] = "Someone Else"
    data = write_data_dir(tmp_path / "data", passages)
    second = run(cfg(tmp_path, data, n_passages=3), loaded=tiny, **QUIET)
    assert second.folder != first.folder
    eval1 = json.loads((first.folder / "config.json").read_text())["eval_set"]
    eval2 = json.loads((second.folder / "config.json").read_text())["eval_set"]
    assert eval1 != eval2
    keys2 = {(r["contender"], r["passage_id"]): r["key"] for r in results(second.folder)}
    changed = {k for k in keys1 if keys1[k] != keys2[k]}
    pid = next(r["passage_id"] for r in results(first.folder) if "tower 1?" in r["questions"][0]["question"])
    assert changed == {(c, pid) for c in ("base", "passage")}
    assert second.n_computed == 2 and second.n_reused == 4
    golds = [q["golds"] for r in results(second.folder) if r["passage_id"] == pid for q in r["questions"]]
    assert ["Someone Else"] in golds


def test_a_notes_file_is_keyed_by_each_note_not_by_its_path(tmp_path, tiny):
    """One passage's note changed under the same path: only that passage's unit gets a new key; the
    same notes under another path: every unit is reused."""
    notes = [{"title": p["title"], "context": p["context"], "completions": ["1. a fact"]} for p in (MADE_UP, MADE_UP_2)]
    data = write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2], notes)
    spec = tmp_path / "teacher.yaml"
    spec.write_text("name: teacher\nfamily: squad\nedits: file\nfile: notes/teacher.json\n")
    first = run(cfg(tmp_path, data, contenders=[str(spec)]), loaded=tiny, **QUIET)
    keys1 = {r["passage_id"]: r["key"] for r in results(first.folder)}
    notes[1]["completions"] = ["1. another fact"]
    write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2], notes)
    second = run(cfg(tmp_path, data, contenders=[str(spec)]), loaded=tiny, **QUIET)
    keys2 = {r["passage_id"]: r["key"] for r in results(second.folder)}
    assert {p for p in keys1 if keys1[p] != keys2[p]} == {next(r["passage_id"] for r in results(second.folder)
                                                          if r["self_edits"] == ["1. another fact"])}
    assert second.folder != first.folder and (second.n_reused, second.n_computed) == (1, 1)
    (data / "notes" / "teacher.json").rename(data / "notes" / "moved.json")
    spec.write_text("name: teacher\nfamily: squad\nedits: file\nfile: notes/moved.json\n")
    third = run(cfg(tmp_path, data, contenders=[str(spec)]), loaded=tiny, **QUIET)
    assert third.n_computed == 0 and {r["passage_id"]: r["key"] for r in results(third.folder)} == keys2


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask_like_a_plain_open(tmp_path, umask):
    """A temp file then rename (mkstemp makes 0600) leaves the mode a plain open() would."""
    from sealbench.store import write_atomic, write_json

    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        write_atomic(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"a": 1})
        folder = RunFolder.open(tmp_path / "reports", "r", {"a": 1})
        folder.close()
    finally:
        os.umask(old)
    want = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    for path in (tmp_path / "a.txt", tmp_path / "b.json", tmp_path / "reports" / "r" / "config.json"):
        assert path.stat().st_mode & 0o777 == want, (path, oct(path.stat().st_mode))
    os.chmod(tmp_path / "a.txt", 0o640)  # an existing file keeps its own mode, as open() keeps it
    write_atomic(tmp_path / "a.txt", "y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_json_files_never_hold_nan_or_infinity(tmp_path):
    """round_N/stats.json of a round that kept nothing held NaN (invalid JSON): every JSON file the
    project writes through write_json has null for a non-finite number."""
    from sealbench.stats import mean_ci
    from sealbench.store import write_json

    empty = mean_ci([], 0)  # what a round that kept nothing reports
    obj = {"reward_kept": empty, "nested": [{"x": float("nan")}, float("inf"), -float("inf"), (1.5, float("nan"))],
           "ok": 0.25}
    write_json(tmp_path / "stats.json", obj)
    text = (tmp_path / "stats.json").read_text()

    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    back = json.loads(text, parse_constant=refuse)  # strict JSON: no NaN / Infinity
    assert back["nested"] == [{"x": None}, None, None, [1.5, None]] and back["ok"] == 0.25
    assert all(v is None or isinstance(v, (int, float, str)) for v in back["reward_kept"].values())


def test_an_rl_round_that_kept_nothing_is_summarized_from_its_null_stats(tmp_path):
    """stats.json of a round that kept nothing has null (not NaN) for reward_kept; the results table
    reads it back as 'no number' (NaN, written null in summary.jsonl)."""
    from types import SimpleNamespace

    from sealbench.registry import rl_preset
    from sealbench.rl import loop
    from sealbench.stats import mean_ci
    from sealbench.store import write_json

    cfg = rl_preset("tiny")
    (tmp_path / "round_1").mkdir()
    write_json(tmp_path / "manifest.json", {"models": {"base": {"fingerprint": "f"}}, "device_name": "cpu"})
    write_json(tmp_path / "round_1" / "stats.json", {"reward_all": mean_ci([0.0, 0.0], 0), "reward_kept": mean_ci([], 0)})
    assert "NaN" not in (tmp_path / "round_1" / "stats.json").read_text()
    rows = loop._summary_rows(SimpleNamespace(path=tmp_path), cfg, "rid", SimpleNamespace(name="m"), [], [])
    kept = next(r for r in rows if r["metric"] == "reward_kept")
    assert kept["n"] == 0 and kept["value"] != kept["value"]  # NaN: no number
