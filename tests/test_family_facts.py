"""Each family fact is declared once, in the family's package (families/<name>/__init__.py: NAME,
TASKS, FIXED_GRADER): config, the registry, the runner, the RL loop and the reports read that
declaration (families/__init__.py). The grader test changes ARC's declaration to a made-up name: a module that kept its own
copy ("exact-grid" if family == "arc") records the old name and fails it."""
from __future__ import annotations

import json
import typing
from types import SimpleNamespace

import pytest

from sealbench import registry, runner
from sealbench.config import ContenderSpec, RLConfig, RunConfig, Task
from sealbench.families import PACKAGES
from sealbench.families.base import Family
from sealbench.report import migrate, results, view
from sealbench.rl import loop
from sealbench.stats import mean_ci
from sealbench.store import write_json

DECLARED = {task: name for name, p in PACKAGES.items() for task in p.TASKS}


def test_tasks_and_families_are_the_packages_declarations():
    assert set(DECLARED) == {"seal_squad_nocontext", "seal_arc_fewshot", "seal_arc_mini"}
    assert typing.get_args(Task) == tuple(DECLARED)            # --task choices, RunConfig and RLConfig
    assert registry.TASKS == {t: text for p in PACKAGES.values() for t, text in p.TASKS.items()}
    assert typing.get_args(ContenderSpec.model_fields["family"].annotation) == results.FAMILIES == ("squad", "arc")
    for task, name in DECLARED.items():
        assert RunConfig(task=task).family == name
        row = results.make_row(run_id="r", task=task, protocol="single", model="m", contender="c", grader="g",
                               eval_set="e", metric="accuracy", value=0.5, n=1, unit="items")
        assert row["family"] == name


@pytest.mark.parametrize("name", list(PACKAGES))
def test_every_task_of_a_family_gets_its_object_which_has_the_whole_contract(name):
    members = set(Family.__annotations__) | {k for k, v in vars(Family).items() if callable(v) and not k.startswith("_")}
    assert members >= {"name", "rl", "load_items", "plan", "edit_prompt", "sample_edits", "run", "summarize"}
    for task in PACKAGES[name].TASKS:
        fam = registry.family(task)
        assert fam.name == name and not [m for m in members if not hasattr(fam, m)]


def _rl_folder(path, rounds: int = 1):
    write_json(path / "manifest.json", {"models": {"base": {"fingerprint": "f"}}, "device_name": "cpu"})
    for r in range(1, rounds + 1):
        (path / f"round_{r}").mkdir()
        write_json(path / f"round_{r}" / "stats.json", {"reward_all": mean_ci([1.0, 0.0], 0),
                                                         "reward_kept": mean_ci([1.0], 0)})
    return SimpleNamespace(path=path)


@pytest.mark.parametrize("task", ["seal_arc_mini", "seal_squad_nocontext"])
def test_the_grader_every_row_records_is_the_familys_declaration(task, tmp_path, monkeypatch):
    monkeypatch.setattr(PACKAGES["arc"], "FIXED_GRADER", "made-up-grid")
    arc = DECLARED[task] == "arc"
    want = "made-up-grid" if arc else "f1"   # squad declares none: the run's --grader

    # the runner's results table (`common["grader"]`)
    assert runner._grader_name(RunConfig(task=task, grader="f1")) == want

    # the RL loop's results table
    cfg = RLConfig(task=task, grader="f1", rounds=1, keep="all-correct" if arc else "top1")
    rows = loop._summary_rows(_rl_folder(tmp_path), cfg, "rid", SimpleNamespace(name="m"), [], [])
    assert rows and {r["grader"] for r in rows} == {want}

    # migrated old folders: a run's summary.json and an RL run's
    kind = "seal-rl-arc" if arc else "seal-rl-squad"
    for i, summary in enumerate([{"task": task, "grader": "f1", "contenders": {"c": {"pairs_solved": 0.5,
                                                                                    "accuracy": 0.5}}},
                                 {"kind": kind, "config": {"grader": "f1"},
                                  "rounds": [{"round": 1, "mean_reward_all": 0.5, "n_samples": 2}]}]):
        old = tmp_path / f"old{i}"
        old.mkdir()
        (old / "summary.json").write_text(json.dumps(summary))
        rows = migrate.legacy_rows(old)
        assert rows and {r["grader"] for r in rows} == {want}

    # the viewer: ARC's answers are graded by its declared grader only, so --grader is refused with it
    if arc:
        folder = tmp_path / "arc-run"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"task": task, "protocol": "single", "grader": "f1"}))
        (folder / "results.jsonl").write_text("")
        (folder / "COMPLETE").write_text("")
        with pytest.raises(view.ViewError, match="graded by made-up-grid only"):
            view.build(folder, data_dir=str(tmp_path / "no-data"), grader="match")
