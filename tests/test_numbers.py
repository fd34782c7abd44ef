"""Numbers a researcher can trust (issue 25): n with several self-edits per item, per-edit times
that add up, the same unit's rows whatever it was batched with."""
from __future__ import annotations

import time

import pytest

from conftest import MADE_UP, MADE_UP_2, write_data_dir
from sealbench.config import RunConfig
from sealbench.runner import run
from sealbench.store import RESULTS, read_rows
from sealbench.families.squad.metrics import _accuracy_rows, per_question


BASE = dict(run_id="r", task="seal_squad_nocontext", protocol="single", model="m", contender="c",
            grader="match", eval_set="e")


def _row(pid: str, verdicts: list[bool]) -> dict:
    return {"status": "ok", "questions": [
        {"passage_id": pid, "question": f"q{i}", "correct": v, "em": float(v), "f1": float(v),
         "prediction": "a b" if v else "a"} for i, v in enumerate(verdicts)]}


def test_micro_accuracy_counts_each_question_once_with_two_self_edits():
    # 3 passages x 3 questions = 9 questions, k = 2 self-edits each: 6 rows, 18 answers
    rows = []
    for p in range(3):
        rows.append(_row(f"p{p}", [True, True, False]))
        rows.append(_row(f"p{p}", [True, False, False]))
    got = {r["metric"]: r for r in _accuracy_rows(BASE, rows, {"p0": 0.5, "p1": 0.5, "p2": 0.5}, 0)}
    assert got["micro_accuracy"]["n"] == 9
    assert abs(got["micro_accuracy"]["value"] - 0.5) < 1e-9
    assert got["answer_words"]["n"] == 9
    # a question's two answers are averaged first: values 1, 0.5, 0 per passage
    assert sorted(per_question(rows)) == [0.0] * 3 + [0.5] * 3 + [1.0] * 3


def test_micro_accuracy_with_one_self_edit_is_the_plain_mean():
    rows = [_row("p0", [True, False]), _row("p1", [True, True])]
    got = {r["metric"]: r for r in _accuracy_rows(BASE, rows, {"p0": 0.5, "p1": 1.0}, 0)}
    assert got["micro_accuracy"]["n"] == 4 and abs(got["micro_accuracy"]["value"] - 0.75) < 1e-9


def _teacher_run(tmp_path, tiny, **kw):
    """base, passage (1 sequence per edit), a notes file of 12 statements (13 sequences) and
    self-notes (sampled) on two made-up passages with the tiny model."""
    facts = "\n".join(f"{i}. Fact {i} about the glass is that it has {i} panes." for i in range(12))
    notes = [{"title": p["title"], "context": p["context"], "completions": [facts]} for p in (MADE_UP, MADE_UP_2)]
    data = write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2], notes)
    spec = tmp_path / "teacher.yaml"
    spec.write_text("name: teacher\nfamily: squad\nedits: file\nfile: notes/teacher.json\n")
    config = RunConfig(**{**dict(contenders=["base", "passage", str(spec), "self-notes"], n_passages=2, epochs=2,
                                 max_answer_tokens=4, seed=0, data_dir=str(data), reports_dir=str(tmp_path / "r"),
                                 edits_per_batch=4, notes_max_tokens=32), **kw})
    start = time.perf_counter()
    result = run(config, loaded=tiny, progress=False, say=lambda m: None)
    return result, time.perf_counter() - start


def test_per_edit_times_follow_the_edits_work_and_the_phases_add_up_to_the_wall_time(tmp_path, tiny):
    result, wall = _teacher_run(tmp_path, tiny)
    rows = read_rows(result.folder / RESULTS)
    by = {}
    for r in rows:
        by.setdefault(r["contender"], []).append(r)
    steps = {c: by[c][0]["train"]["steps"] for c in ("passage", "teacher")}
    assert steps["teacher"] >= 10 * steps["passage"]
    # the same batch, each edit its own share: 13 sequences train for longer than 1
    teacher = min(r["timing"]["train_s"] for r in by["teacher"])
    passage = max(r["timing"]["train_s"] for r in by["passage"])
    # (13x the steps; an interval's fixed costs, such as resetting slots, are split over its passes,
    # so under load the ratio shrinks: ~5x measured idle, 1.7x with the 2-core box fully loaded)
    assert teacher > 1.5 * passage > 0
    assert all(r["timing"]["train_s"] == 0.0 for r in by["base"])
    assert all(r["timing"]["generate_s"] > 0 for r in by["self-notes"])
    # the units' own phases cover the run's wall time (the rest: checks, folder, engine set-up)...
    units = sum(r["timing"][k] for r in rows for k in ("train_s", "answer_s", "grade_s", "generate_s"))
    assert units > 0.9 * wall, (units, wall, result.phases)  # 96% measured on the 2-core CPU
    # ...and the invocation's phases add up to it, and are in summary.md
    phases = dict(result.phases)
    total = phases.pop("wall_s")
    assert abs(sum(phases.values()) - total) < 1e-6 and abs(total - wall) < 0.03 * wall
    assert "wall time of this invocation" in (result.folder / "summary.md").read_text()


def test_progress_hooks_count_sampled_self_edits_and_training_steps(tmp_path, tiny, monkeypatch):
    from sealbench.engine import inner_loop

    seen = {"generated": 0, "trained": []}
    real = inner_loop.Hooks

    import sealbench.runner as runner

    real_sample = runner.EditSources.produce

    def produce(self, missing):
        hook, step = real.generated, real.decoded
        assert hook is not None and step is not None
        real.generated = lambda n: (seen.__setitem__("generated", seen["generated"] + n), hook(n))
        real.decoded = lambda i, total: (seen.setdefault("decoded", []).append((i, total)), step(i, total))
        try:
            return real_sample(self, missing)
        finally:
            real.generated, real.decoded = hook, step

    real_step = runner._step_eta

    def step_eta(bar, label):
        inner = real_step(bar, label)
        return lambda done, total: (seen["trained"].append((done, total)), inner(done, total))

    monkeypatch.setattr(runner.EditSources, "produce", produce)
    monkeypatch.setattr(runner, "_step_eta", step_eta)
    result, _ = _teacher_run(tmp_path, tiny)
    assert seen["generated"] == 2                       # self-notes: one self-edit per passage
    assert seen["decoded"][0] == (1, 32) and len(seen["decoded"]) > 1  # token by token (notes_max_tokens 32)
    done = [d for d, _ in seen["trained"]]
    assert done == sorted(done) and seen["trained"][-1][0] == seen["trained"][-1][1] > 10
    assert inner_loop.Hooks.generated is None and inner_loop.Hooks.decoded is None
    assert inner_loop.Hooks.trained is None


def test_an_interrupt_says_how_many_finished_units_were_saved_and_how_many_lost(tmp_path, tiny, monkeypatch):
    import pytest

    from sealbench.executors import LocalExecutor
    from sealbench.runner import Interrupted

    real_run = LocalExecutor.run

    def first_group_then_ctrl_c(self, pending, edits):
        for n, out in enumerate(real_run(self, pending, edits)):
            yield out
            if n == 0:
                raise KeyboardInterrupt

    monkeypatch.setattr(LocalExecutor, "run", first_group_then_ctrl_c)
    with pytest.raises(Interrupted) as err:
        _teacher_run(tmp_path, tiny)
    folder = next((tmp_path / "r").iterdir())
    saved = len(read_rows(folder / RESULTS))
    assert 0 < saved < 8
    assert f"{saved} finished unit(s) of 8 were saved" in str(err.value)
    assert f"{8 - saved} in flight or queued were lost" in str(err.value)


def test_p_values_never_print_as_zero():
    from sealbench.report.results import fmt_p

    assert fmt_p(0.0004998) == "p<0.001" and fmt_p(0.0) == "p<0.001"
    assert fmt_p(0.004) == "p=0.004" and fmt_p(0.04) == "p=0.04" and fmt_p(1.0) == "p=1.00"


def test_continual_says_it_plans_no_units_for_base(tmp_path, tiny):
    said = []
    data = write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2])
    config = RunConfig(protocol="continual", contenders=["base", "passage"], steps=2, sequences=1, n_passages=2,
                       epochs=1, max_answer_tokens=2, seed=0, data_dir=str(data), reports_dir=str(tmp_path / "r"))
    run(config, loaded=tiny, progress=False, say=said.append)
    assert any(line.startswith("continual: base adapt(s) nothing") for line in said)


def test_compare_of_a_committed_folder_writes_outside_it(tmp_path):
    import subprocess

    from sealbench.report.compare import default_out

    plain = tmp_path / "plain"
    plain.mkdir()
    assert default_out(plain) == str(plain / "compare")
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "results" / "a.txt").write_text("x")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "results/a.txt"], check=True)
    assert default_out(repo / "results") == "reports/compare-results"


def _towers(n: int) -> list[dict]:
    """n made-up passages of three lengths (so a queue's passes pad rows of different widths)."""
    return [{"title": f"Vorlan {i}", "context": f"The Vorlan tower number {i} was built by Ildra Quen{i} in "
             f"{1700 + i} and is {100 + i} metres tall." + " It stands near the river." * (i % 3),
             "questions": [{"question": f"Who built Vorlan tower {i}?", "answer": f"Ildra Quen{i}"},
                           {"question": f"When was Vorlan tower {i} built?", "answer": str(1700 + i)}]}
            for i in range(n)]


@pytest.mark.slow
def test_a_unit_alone_or_in_a_queue_of_8_with_1_or_2_threads(tmp_path, embedded):
    """What reuse by content relies on, measured on a CPU in fp32 (docs/run-folders.md): the same
    key, the same answers and verdicts, losses equal to float rounding (not bit for bit: a pass's
    shape and the thread count change how a matmul's sums are rounded)."""
    import torch

    data = write_data_dir(tmp_path / "d", _towers(8))
    before, seen = torch.get_num_threads(), {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for n in (1, 8):
                config = RunConfig(contenders=["passage"], n_passages=n, epochs=2, max_answer_tokens=8, seed=0,
                                   data_dir=str(data), reports_dir=str(tmp_path / f"r{threads}-{n}"),
                                   edits_per_batch=8)
                result = run(config, loaded=embedded, progress=False, say=lambda m: None)
                rows = {r["passage_ids"][0]: r for r in read_rows(result.folder / RESULTS)}
                assert result.n_computed == n and all(r.get("reused_from") is None for r in rows.values())
                pid = seen.get("pid") or next(iter(rows))
                seen["pid"], seen[(threads, n)] = pid, rows[pid]
    finally:
        torch.set_num_threads(before)
    ref = seen[(1, 1)]
    for where in ((1, 8), (2, 1), (2, 8)):
        row = seen[where]
        assert row["key"] == ref["key"] and row["seed"] == ref["seed"], where
        assert [(q["raw"], q["correct"]) for q in row["questions"]] == \
            [(q["raw"], q["correct"]) for q in ref["questions"]], where
        for a, b in zip(row["train"]["epoch_losses"], ref["train"]["epoch_losses"]):
            assert abs(a - b) <= 1e-5 * abs(b), where


def test_a_cpu_dry_run_of_a_gpu_sized_continual_job_says_so(tmp_path, monkeypatch):
    """The header says K x S from the pool (not 'N passages'), base's missing units are explained,
    and an estimate in days on a CPU names it a GPU job (rates forced large: no calibration)."""
    from sealbench import estimate

    monkeypatch.setattr(estimate, "calibrate", lambda *a, **k: estimate.Rates(100.0, 1.0, 10.0, 100.0, 1000.0, 5.0))
    data = write_data_dir(tmp_path / "d", [MADE_UP, MADE_UP_2])
    said = []
    config = RunConfig(protocol="continual", contenders=["base", "passage"], steps=2, sequences=3, n_passages=2,
                       epochs=10, seed=0, data_dir=str(data), reports_dir=str(tmp_path / "r"), device="cpu")
    out = estimate.dry_run(config, said.append)
    text = "\n".join(said)
    assert "3 sequences x 2 passages drawn from the first 2 evaluation passages" in text
    assert "continual: base adapt(s) nothing" in text
    assert out["total_s"] > estimate.GPU_SIZED_S and "meant for a GPU" in text
