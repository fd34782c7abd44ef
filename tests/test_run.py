"""End-to-end runs: the real embedded model learns made-up facts; run folders resume and survive kills;
bad input becomes clear errors or recorded per-item failures."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealbench.cli import main
from sealbench.inner_loop import TrainConfig
from sealbench.runner import KnowledgeConfig, KnowledgeRun

from conftest import MADE_UP, MADE_UP_2, REPO, write_data_dir


def config(**kw) -> KnowledgeConfig:
    base = dict(contenders=["base", "passage"], n_passages=1, device="cpu",
                train=TrainConfig(epochs=1))
    base.update(kw)
    return KnowledgeConfig(**base)


@pytest.mark.slow
def test_passage_contender_learns_made_up_facts(tmp_path, embedded):
    """Fails if training does nothing: the base model cannot know these facts."""
    data = write_data_dir(tmp_path / "data", [MADE_UP])
    run = KnowledgeRun(config(train=TrainConfig()), tmp_path / "reports", str(data), loaded=embedded,
                       progress=False)
    summary = run.run()
    acc = {name: s["accuracy"]["mean"] for name, s in summary["contenders"].items()}
    assert acc["base"] == 0.0
    assert acc["passage"] >= 0.5, run.folder.rows("results.jsonl")[-1]["questions"]


def test_run_folder_complete_consistent_and_resumable(tmp_path, made_up_data, embedded):
    run = KnowledgeRun(config(), tmp_path / "reports", str(made_up_data), loaded=embedded, progress=False)
    summary = run.run()
    folder = run.folder.path
    for name in ("config.json", "manifest.json", "results.jsonl", "summary.json", "summary.md"):
        assert (folder / name).exists(), name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"]["fingerprint"] == embedded.fingerprint
    assert manifest["seed"] == 0 and manifest["device"] == "cpu"
    assert {"torch", "transformers", "peft", "python"} <= set(manifest["versions"])
    assert "torch_threads" in manifest["machine"]
    rows = run.folder.rows("results.jsonl")
    assert [r["contender"] for r in rows] == ["base", "passage"]
    assert rows[1]["train"]["steps"] == 1 and rows[0]["train"] is None
    assert summary["complete"] and summary["contenders"]["passage"]["n_questions"] == len(rows[1]["questions"])
    for s in summary["contenders"].values():
        assert {"mean", "ci_low", "ci_high", "n"} <= set(s["accuracy"])
    # Same config again: nothing to do, nothing rewritten.
    before = (folder / "results.jsonl").read_text()
    again = KnowledgeRun(config(), tmp_path / "reports", str(made_up_data), loaded=embedded, progress=False)
    assert again.folder.path == folder and again.pending() == []
    again.run()
    assert (folder / "results.jsonl").read_text() == before
    # A changed config is a new run folder; the old one is untouched.
    other = KnowledgeRun(config(seed=1), tmp_path / "reports", str(made_up_data), loaded=embedded, progress=False)
    assert other.folder.path != folder and len(other.pending()) == 2


def test_same_config_same_results(tmp_path, made_up_data, embedded):
    results = []
    for where in ("a", "b"):
        run = KnowledgeRun(config(contenders=["passage"]), tmp_path / where, str(made_up_data),
                           loaded=embedded, progress=False)
        run.run()
        row = run.folder.rows("results.jsonl")[0]
        results.append(([q["prediction"] for q in row["questions"]], row["train"]["epoch_losses"]))
    assert results[0] == results[1]


def test_killed_run_resumes_without_lost_or_duplicated_units(tmp_path):
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    reports = tmp_path / "reports"
    cmd = [sys.executable, "-m", "sealbench.cli", "run", "--contender", "base", "passage",
           "--n-passages", "2", "--epochs", "1", "--device", "cpu", "--data-dir", str(data),
           "--reports-dir", str(reports), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    results = None
    while time.time() < deadline and proc.poll() is None:
        found = list(reports.glob("*/results.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:
            results = found[0]
            break
        time.sleep(0.2)
    assert results is not None, proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = results.read_text().count("\n")
    assert 2 <= n_before < 4
    assert not (results.parent / "summary.json").exists()  # never a half report
    finished = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    keys = [json.loads(l)["key"] for l in results.read_text().splitlines()]
    assert len(keys) == 4 and len(set(keys)) == 4
    summary = json.loads((results.parent / "summary.json").read_text())
    assert summary["complete"] and summary["contenders"]["passage"]["n_passages"] == 2


# ----------------------------------------------------------------------------- bad input
def write_contender(path: Path, **fields) -> str:
    import yaml
    path.write_text(yaml.safe_dump(fields))
    return str(path)


def test_bad_items_are_recorded_failures_not_crashes(tmp_path, tiny):
    no_questions = {"title": "Empty", "context": "Nothing is asked here.", "questions": []}
    notes = [{"title": MADE_UP["title"], "context": MADE_UP["context"], "completions": [""]},
             {"title": MADE_UP_2["title"], "context": MADE_UP_2["context"],
              "completions": ["\n".join(f"{i}. fact {i}" for i in range(5000))]}]
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2, no_questions], notes)
    teacher = write_contender(tmp_path / "t.yaml", name="t", notes={"source": "file", "file": "notes/teacher.json"})
    live = write_contender(tmp_path / "live.yaml", name="live",
                           notes={"source": "endpoint", "endpoint": {"base_url": "http://127.0.0.1:9/v1", "timeout": 2}})
    run = KnowledgeRun(config(contenders=[teacher, live], n_passages=3), tmp_path / "reports", str(data),
                       loaded=tiny, progress=False)
    summary = run.run()
    rows = {(r["contender"], r["title"]): r for r in run.folder.rows("results.jsonl")}
    empty = rows[("t", "Zorbian glass")]
    assert empty["status"] == "ok" and "empty" in empty["warning"] and empty["n_train_sequences"] == 1
    huge = rows[("t", "Quillon river")]
    assert huge["status"] == "failed" and "5000 statements" in huge["error"] and "--max-statements" in huge["error"]
    assert "no notes for passage" in rows[("t", "Empty")]["error"]
    assert all("unreachable" in rows[("live", t)]["error"] for t in ("Zorbian glass", "Quillon river", "Empty"))
    assert summary["contenders"]["t"]["n_failed"] == 2
    # Failed units are retried by the next run, not silently counted as done.
    assert len(run.pending()) == 5


def test_passage_without_questions_is_a_recorded_failure(tmp_path, tiny):
    data = write_data_dir(tmp_path / "data", [{"title": "Empty", "context": "No questions.", "questions": []}])
    run = KnowledgeRun(config(), tmp_path / "reports", str(data), loaded=tiny, progress=False)
    run.run()
    errors = {r["error"] for r in run.folder.rows("results.jsonl")}
    assert errors == {"passage dev:0 ('Empty') has no questions to answer"}


def test_cli_bad_data_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "squad_v1.1_dev_by_passage.json").write_text("{not json")
    code = main(["run", "--data-dir", str(tmp_path), "--reports-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is not valid JSON" in err[0] and "Traceback" not in err[0]
    code = main(["run", "--contender", "nope", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown contender 'nope'" in err


def test_cli_missing_data_dir_is_one_clear_line(tmp_path, capsys):
    code = main(["run", "--data-dir", str(tmp_path / "nowhere"), "--reports-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0]


def test_cli_grade_and_list(tmp_path, capsys):
    rows = [{"question": "Who?", "gold": "Elodie Marwick", "prediction": "It was Elodie Marwick."},
            {"question": "When?", "gold": ["1873", "in 1873"], "prediction": "1901"}]
    inp = tmp_path / "rows.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "verdicts.jsonl"
    assert main(["grade", "--in", str(inp), "--out", str(out)]) == 0
    verdicts = [json.loads(l) for l in out.read_text().splitlines()]
    assert [v["correct"] for v in verdicts] == [True, False] and verdicts[0]["grader"] == "match"
    inp.write_text(json.dumps(rows[0]) + "\n{broken\n")
    assert main(["grade", "--in", str(inp), "--out", str(out)]) == 2
    assert "rows.jsonl:2 is not valid JSON" in capsys.readouterr().err
    inp.write_text(json.dumps({"question": "q"}) + "\n")
    assert main(["grade", "--in", str(inp), "--out", str(out)]) == 2
    assert "lacks gold, prediction" in capsys.readouterr().err
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("seal_squad_nocontext", "base", "passage", "self-notes", "teacher-notes", "in-context", "match", "judge"):
        assert name in listed
