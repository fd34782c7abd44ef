"""ARC runs end to end on the generated mini tier: rows, summary, resume, invalid self-edits."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sealbench.arc.data import ArcDataError, load_tasks, mini_tasks, seal_tasks
from sealbench.arc.run import (ArcConfig, ArcRunError, arc_table, config_from_dict, cpu_budget,
                               load_arc_contender, run_arc)
from sealbench.arc.ttt import TTTSettings


def smallest(config: ArcConfig) -> ArcConfig:
    c = cpu_budget(config)
    return replace(c, ttt=replace(c.ttt, cap=4, predict_transforms=("identity",), leave_one_out_prompts=False,
                                  max_new_tokens=40))


@pytest.fixture
def tiny_fresh(tiny):
    from sealbench.models import tiny_random_model
    return tiny_random_model(seed=1, vocab_from=tiny)


def test_contenders_load():
    assert load_arc_contender("oracle").config["training"]["learning_rate"] == 1e-4
    assert load_arc_contender("icl").configs == "none"
    assert load_arc_contender("ttt-self-edit").k == 5 and load_arc_contender("seal").configs == "policy"
    with pytest.raises(ArcRunError, match="unknown ARC contender"):
        load_arc_contender("nope")


def test_mini_tier_is_deterministic_and_valid():
    a, b = mini_tasks(12, seed=0), mini_tasks(12, seed=0)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
    assert [t.to_dict() for t in mini_tasks(3, seed=1)] != [t.to_dict() for t in a[:3]]
    for t in a:
        assert len(t.train) == 3 and len(t.test_inputs) == 1
        for g in [x for p in t.train for x in p] + t.test_inputs:
            assert 2 <= len(g) <= 6 and 2 <= len(g[0]) <= 6
    assert {t.rule for t in a} >= {"color_map", "flip_lr", "rot90", "gravity", "tile_h"}
    assert [t.id for t in load_tasks("mini-train", n_tasks=2)] != [t.id for t in load_tasks("mini", n_tasks=2)] or \
        load_tasks("mini-train", n_tasks=2)[0].train != load_tasks("mini", n_tasks=2)[0].train


def test_mini_tier_rules_and_size_settings():
    tasks = load_tasks("mini", n_tasks=4, mini_rules=["color_map", "flip_lr"], mini_size=[3, 3])
    assert [t.rule for t in tasks] == ["color_map", "flip_lr", "color_map", "flip_lr"]
    assert all(len(g) == 3 and len(g[0]) == 3 for t in tasks for p in t.train for g in p)
    train = load_tasks("mini-train", n_tasks=2, mini_rules=["color_map"], mini_size=[3, 3])
    assert all(t.rule == "color_map" for t in train) and train[0].train != tasks[0].train
    with pytest.raises(ArcDataError, match="unknown mini rule"):
        load_tasks("mini", n_tasks=1, mini_rules=["teleport"])


def test_seal_subsets_load(tmp_path):
    from conftest import shared_data_dir
    data = shared_data_dir()
    if data is None or not (data / "arc").exists():
        pytest.skip("shared ARC data not found")
    ev, tr = seal_tasks("evaluation", data), seal_tasks("training", data)
    assert len(ev) == 10 and len(tr) == 12 and all(t.test_outputs for t in ev + tr)
    assert ev[0].id == "358ba94e"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t1": {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}}))
    from sealbench.arc.data import ArcDataError, load_arc_json
    with pytest.raises(ArcDataError, match="task t1 train\\[0\\].input.*not rectangular"):
        load_arc_json(bad)


def test_full_run_on_mini_tier_tiny_model(tmp_path, tiny_fresh):
    cfg = smallest(ArcConfig(task="seal_arc_mini", n_tasks=2, contenders=["icl", "ttt-self-edit", "oracle", "seal"],
                             k=2, device="cpu"))
    summary = run_arc(cfg, tmp_path, loaded=tiny_fresh, policy=tiny_fresh, progress=False)
    assert summary["complete"] and summary["n_planned_units"] == 2 * (1 + 2 + 1 + 2)
    s = summary["contenders"]
    assert s["icl"]["n_pairs"] == 2 and s["oracle"]["n_pairs"] == 2 and s["seal"]["n_pairs"] == 4
    assert s["oracle"]["edit_status_counts"] == {"ok": 2} and s["oracle"]["mean_train_steps"] > 0
    assert s["icl"]["edit_status_counts"] == {"icl": 2}
    # a random model writes gibberish configs: recorded invalid, reward 0, never trained
    assert s["ttt-self-edit"]["n_invalid"] == 4 and s["ttt-self-edit"]["pairs_solved"]["mean"] == 0.0
    for key in ("pairs_solved", "task_pass2", "task_any_edit"):
        assert set(s["oracle"][key]) == {"mean", "ci_low", "ci_high", "n"}
    folder = next(tmp_path.iterdir())
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    inv = [r for r in rows if r["contender"] == "ttt-self-edit"]
    assert all(r["reward"] == 0.0 and r["train"] is None and r["reason"] for r in inv)
    assert (folder / "summary.md").exists() and "| oracle |" in arc_table(summary)
    assert json.loads((folder / "manifest.json").read_text())["model"]["fingerprint"] == "random-1"
    # resume: a second run with the same config adds nothing and gives the same numbers
    again = run_arc(cfg, tmp_path, loaded=tiny_fresh, policy=tiny_fresh, progress=False)
    assert len((folder / "results.jsonl").read_text().splitlines()) == 12
    assert json.dumps(again["contenders"], sort_keys=True) == json.dumps(summary["contenders"], sort_keys=True)


def test_arc_command_line_settings():
    from sealbench.cli import UserError, _arc_settings

    got = _arc_settings(["n_tasks=4", "budget=cpu", "ttt.cap=64", "ttt.predict_transforms=[identity, rot90]",
                         "tasks=a.json:b.json"], 3)
    assert got == {"n_tasks": 4, "budget": "cpu", "ttt": {"cap": 64, "predict_transforms": ["identity", "rot90"]},
                   "tasks": "a.json:b.json", "k": 3}
    cfg = config_from_dict({k: v for k, v in got.items() if k != "budget"})
    assert cfg.ttt.cap == 64 and cfg.ttt.predict_transforms == ("identity", "rot90") and cfg.k == 3
    with pytest.raises(UserError, match="KEY=VALUE"):
        _arc_settings(["cap64"], None)


def test_config_from_dict():
    cfg = config_from_dict({"task": "seal_arc_mini", "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj"]},
                            "ttt": {"cap": 5, "predict_transforms": ["identity"]}})
    assert cfg.lora.r == 8 and cfg.lora.target_modules == ("q_proj",) and cfg.ttt.cap == 5
    assert cfg.ttt.predict_transforms == ("identity",)


@pytest.fixture
def tiny_dir(tmp_path, tiny_fresh):
    path = tmp_path / "tinymodel"
    tiny_fresh.model.save_pretrained(path)
    tiny_fresh.tokenizer.save_pretrained(path)
    return str(path)


def small_rl(model, **kw):
    from sealbench.arc.rl import ArcRLConfig
    from sealbench.inner_loop import LoRAConfig

    ttt = TTTSettings(cap=4, predict_transforms=("identity",), leave_one_out_prompts=False, max_new_tokens=30)
    return ArcRLConfig(model=model, tasks="mini-train", n_tasks=2, k=2, device="cpu", max_new_tokens=24,
                       inner_lora=LoRAConfig(r=4, alpha=8), sft_lora=LoRAConfig(r=4, alpha=8), ttt=ttt, **kw)


def test_arc_rl_round_keeps_every_correct_config_and_fine_tunes_the_policy(tmp_path, tiny_dir, monkeypatch):
    """One ReST-EM round through the shared OuterLoop. A random model cannot solve a task, so the
    reward of sample 0 of the first task is forced to 1 (sampling, parsing and TTT still run for real)."""
    import torch
    import sealbench.arc.run as arc_run
    from sealbench.arc.rl import ArcSealTrainer
    from sealbench.models import load_model

    real = arc_run.evaluate_edit
    trainer = ArcSealTrainer(small_rl(tiny_dir), tmp_path / "reports", progress=False)
    first = trainer.tasks[0].id

    def evaluate(loop, task, edit, settings, seed, keep_completions=False):
        rec = real(loop, task, edit, settings, seed, keep_completions)
        if task.id == first and edit.raw == trainer.folder.latest_by_key("round_1/self_edits.jsonl")[f"{first}|0"]["text"]:
            rec.update(solved=True, reward=1.0)
        return rec

    monkeypatch.setattr(arc_run, "evaluate_edit", evaluate)
    policy = trainer.train()
    rdir = trainer.folder.path / "round_1"
    for name in ("self_edits.jsonl", "samples.jsonl", "kept.jsonl", "policy.json", "stats.json"):
        assert (rdir / name).exists(), name
    samples = [json.loads(l) for l in (rdir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["edit_status"] for s in samples} <= {"ok", "invalid", "over_budget", "train_error"}
    kept = [json.loads(l) for l in (rdir / "kept.jsonl").read_text().splitlines()]
    assert [(k["item_id"], k["key"]) for k in kept] == [(first, f"{first}|0")]
    assert "grid puzzle" in kept[0]["prompt"] and kept[0]["completion"] == samples[0]["text"]
    info = json.loads((rdir / "policy.json").read_text())
    if kept[0]["completion"].strip():
        assert info["sft"]["loss_after"] < info["sft"]["loss_before"]
    base = load_model(tiny_dir, device="cpu")
    base_w = dict(base.model.named_parameters())
    changed = [n for n, p in policy.model.named_parameters()
               if "lora_" not in n and not torch.equal(p, base_w[n.replace(".base_layer", "")])]
    assert changed and policy.fingerprint == info["fingerprint"]
    stats = trainer.summary()["rounds"][0]
    assert stats["n_kept"] == 1 and stats["mean_reward_all"]["mean"] == 0.25 and stats["n_items"] == 2
    # resume: nothing is sampled or scored again
    before = (rdir / "samples.jsonl").read_text()
    ArcSealTrainer(small_rl(tiny_dir), tmp_path / "reports", progress=False).train()
    assert (rdir / "samples.jsonl").read_text() == before


def test_seal_contender_trains_its_policy_then_reuses_it(tmp_path, tiny_dir):
    cfg = smallest(ArcConfig(task="seal_arc_mini", n_tasks=1, contenders=["seal"], k=2, device="cpu",
                             model=tiny_dir, rl_n_tasks=1, edit_max_tokens=24))
    summary = run_arc(cfg, tmp_path, progress=False)
    assert summary["complete"] and summary["contenders"]["seal"]["n_pairs"] == 2
    (rl_folder,) = tmp_path.glob("seal-rl-arc-*")
    policy = json.loads((rl_folder / "round_1" / "policy.json").read_text())
    rows = [json.loads(l) for l in (tmp_path / summary["run_id"] / "results.jsonl").read_text().splitlines()]
    assert all(r["policy_fingerprint"] == policy["fingerprint"] for r in rows)
    assert summary["seal_rl"]["seal"]["run_id"] == rl_folder.name and "RL run of `seal`" in arc_table(summary)
    # the RL tasks (mini-train) are not the evaluation tasks
    rl_tasks = json.loads((rl_folder / "config.json").read_text())["task_ids"]
    assert rl_tasks[0].startswith("mini7919-") and not set(rl_tasks) & {r["task_id"] for r in rows}
    mtime = (rl_folder / "round_1" / "policy.json").stat().st_mtime
    run_arc(cfg, tmp_path, progress=False)
    assert (rl_folder / "round_1" / "policy.json").stat().st_mtime == mtime


@pytest.mark.slow
def test_full_run_on_mini_tier_real_model(tmp_path, embedded):
    cfg = smallest(ArcConfig(task="seal_arc_mini", n_tasks=1, contenders=["icl", "ttt-self-edit", "oracle"],
                             k=1, device="cpu", edit_max_tokens=100))
    summary = run_arc(cfg, tmp_path, loaded=embedded, progress=False)
    assert summary["complete"] and summary["n_units_with_rows"] == 3
    s = summary["contenders"]
    assert s["oracle"]["edit_status_counts"] == {"ok": 1} and s["oracle"]["mean_train_steps"] >= 1
    assert s["ttt-self-edit"]["n_pairs"] == 1
    rows = [json.loads(line) for line in (next(tmp_path.iterdir()) / "results.jsonl").read_text().splitlines()]
    edit = next(r for r in rows if r["contender"] == "ttt-self-edit")
    assert isinstance(edit["self_edit"], str) and edit["edit_status"] in ("ok", "invalid", "over_budget", "train_error")
    assert all(r["timing"]["total_s"] > 0 for r in rows)
