"""ARC through the one runner (sealbench.runner.run) and the one RL loop (sealbench.rl.train): task
sets and their errors, the plan's unit identity, full mini-tier runs, resume after a kill, an RL
round that keeps every correct config and fine-tunes the policy, and the seal contender."""
from __future__ import annotations

import json

import pytest

from sealbench import registry
from sealbench.config import ConfigError, RLConfig, RunConfig, validate
from sealbench.families.arc.family import FAMILY
from sealbench.families.arc.data import ArcDataError, load_arc_json, load_tasks, mini_task, mini_tasks, seal_tasks
from sealbench.runner import run

SMALL_TTT = {"cap": 4, "predict_transforms": ("identity",), "leave_one_out_prompts": False, "max_new_tokens": 40}


def arc_config(tmp_path, **kw) -> RunConfig:
    base = dict(task="seal_arc_mini", contenders=("icl", "ttt-self-edit", "oracle"), n_tasks=2, k=2,
                arc_budget="cpu", device="cpu", notes_max_tokens=24, ttt=SMALL_TTT, reports_dir=str(tmp_path / "reports"))
    return RunConfig(**{**base, **kw})


@pytest.fixture
def tiny_fresh(tiny):
    from sealbench.engine.models import tiny_random_model
    return tiny_random_model(seed=1, vocab_from=tiny)


def results(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def metric(table, contender, name, at=""):
    return next(r for r in table if r["contender"] == contender and r["metric"] == name and r["at"] == at)


# ------------------------------------------------------------------------------------ task sets
def test_contenders_load():
    assert registry.load_contender("oracle", "arc").config["training"]["learning_rate"] == 1e-4
    assert registry.load_contender("icl", "arc").edits == "none"
    assert registry.load_contender("seal", "arc").edits == "policy"
    with pytest.raises(ConfigError, match="unknown arc contender"):
        registry.load_contender("nope", "arc")


def test_mini_tier_is_deterministic_and_valid():
    a, b = mini_tasks(12, seed=0), mini_tasks(12, seed=0)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b] and [t.digest for t in a] == [t.digest for t in b]
    assert [t.to_dict() for t in mini_tasks(3, seed=1)] != [t.to_dict() for t in a[:3]]
    assert len({t.digest for t in a}) == 12
    for t in a:
        assert len(t.train) == 3 and len(t.test_inputs) == 1
        for g in [x for p in t.train for x in p] + t.test_inputs:
            assert 2 <= len(g) <= 6 and 2 <= len(g[0]) <= 6
    assert {t.rule for t in a} >= {"color_map", "flip_lr", "rot90", "gravity", "tile_h"}
    train, ev = load_tasks("mini-train", n_tasks=2), load_tasks("mini", n_tasks=2)
    assert train[0].id.startswith("mini7919-") and train[0].train != ev[0].train


def test_mini_tier_rules_and_size_settings():
    tasks = load_tasks("mini", n_tasks=4, mini_rules=["color_map", "flip_lr"], mini_size=[3, 3])
    assert [t.rule for t in tasks] == ["color_map", "flip_lr", "color_map", "flip_lr"]
    assert all(len(g) == 3 and len(g[0]) == 3 for t in tasks for p in t.train for g in p)
    with pytest.raises(ArcDataError, match="unknown mini rule"):
        load_tasks("mini", n_tasks=1, mini_rules=["teleport"])


def test_mini_generation_always_terminates():
    """flip_lr on 1x1 inputs never changes a grid: it used to loop forever at 100% CPU."""
    with pytest.raises(ArcDataError, match=r"cannot generate a flip_lr puzzle with inputs 1x1 to 1x1") as err:
        mini_task("flip_lr", 0, size=(1, 1))
    assert "\n" not in str(err.value)
    with pytest.raises(ArcDataError, match="upscale_2x"):
        mini_task("upscale_2x", 0, size=(16, 20))                  # every output over 30x30
    assert mini_task("flip_lr", 0, size=(2, 2)).rule == "flip_lr"  # the smallest size config allows


@pytest.mark.parametrize("settings,match", [
    ({"mini_size": (1, 1)}, "mini_size.*2 <= min"), ({"mini_size": (4, 3)}, "mini_size"),
    ({"mini_size": (2, 31)}, "mini_size"), ({"mini_rules": ("teleport",)}, "unknown rule.*teleport"),
])
def test_bad_mini_settings_are_one_line_config_errors(settings, match):
    with pytest.raises(ConfigError, match=match) as err:
        validate(RunConfig, {"task": "seal_arc_mini", **settings}, "sealbench run")
    assert "\n" not in str(err.value)


def test_task_set_errors_are_one_line(tmp_path):
    def load(spec):
        with pytest.raises(ArcDataError) as err:
            FAMILY.load_items(RunConfig(task="seal_arc_fewshot", arc_tasks=spec, data_dir=str(tmp_path)).resolve())
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "unknown ARC task set 'nope'" in load("nope")
    assert "not found" in load(str(tmp_path / "missing.json"))
    (tmp_path / "latin1.json").write_bytes('{"t": "caf\xe9"}'.encode("latin-1"))
    assert "is not UTF-8 text" in load(str(tmp_path / "latin1.json"))
    (tmp_path / "broken.json").write_text('{"t1": ')
    assert "is not valid JSON" in load(str(tmp_path / "broken.json"))
    (tmp_path / "nosol.json").write_text(json.dumps({"t1": {"train": [{"input": [[1]], "output": [[2]]}],
                                                           "test": [{"input": [[1]]}]}}))
    assert "no solutions" in load(str(tmp_path / "nosol.json"))
    assert "SEAL's ARC evaluation subset is not at" in load("seal-eval")


def test_seal_subsets_load(tmp_path):
    from conftest import shared_data_dir
    data = shared_data_dir()
    if data is None or not (data / "arc").exists():
        pytest.skip("shared ARC data not found")
    ev, tr = seal_tasks("evaluation", data), seal_tasks("training", data)
    assert len(ev) == 10 and len(tr) == 12 and all(t.test_outputs for t in ev + tr)
    assert ev[0].id == "358ba94e"
    tasks, eval_set = FAMILY.load_items(RunConfig(task="seal_arc_fewshot", n_tasks=3, data_dir=str(data)).resolve())
    assert [t.id for t in tasks] == [t.id for t in ev[:3]] and eval_set.startswith("seal-eval-3-")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t1": {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}}))
    with pytest.raises(ArcDataError, match="task t1 train\\[0\\].input.*not rectangular"):
        load_arc_json(bad)


def test_plan_identity(tmp_path, tiny_fresh):
    """One unit per (contender, task, edit); keys move with what decides a result, not with names."""
    from sealbench.edits import EditSources
    from sealbench.families.arc.protocol import plan

    def keys(cfg, contenders=None):
        cfg = cfg.resolve()
        cs = contenders or [registry.load_contender(n, "arc") for n in cfg.contenders]
        tasks, _ = FAMILY.load_items(cfg)
        fps = {"base": "fp-base"}
        units = plan(cfg, cs, tasks, EditSources(FAMILY, cfg, fps, {}), fps)
        return [(u.contender.name, u.info["task_id"], u.info["edit_index"], len(u.edits), u.key) for u in units]

    base = keys(arc_config(tmp_path))
    assert [u[:4] for u in base[:4]] == [("icl", "mini0-000-color_map", 0, 0), ("ttt-self-edit", "mini0-000-color_map", 0, 1),
                                         ("ttt-self-edit", "mini0-000-color_map", 1, 1), ("oracle", "mini0-000-color_map", 0, 1)]
    assert len(base) == 2 * 4 and len({u[4] for u in base}) == 8
    assert keys(arc_config(tmp_path, n_tasks=3))[:8] == base                     # a bigger run reuses units
    assert keys(arc_config(tmp_path, ttt={**SMALL_TTT, "cap": 5}))[0][4] != base[0][4]
    assert keys(arc_config(tmp_path, seed=1))[0][4] != base[0][4]
    assert keys(arc_config(tmp_path, lora_r=8))[0][4] != base[0][4]
    renamed = registry.load_contender("oracle", "arc").updated(name="my-oracle", description="x")
    assert keys(arc_config(tmp_path, contenders=("oracle",)), [renamed])[0][4] == base[3][4]


# ------------------------------------------------------------------------------------ runs
def test_full_run_on_mini_tier_tiny_model_and_resume(tmp_path, tiny_fresh):
    cfg = arc_config(tmp_path)
    res = run(cfg, progress=False, loaded=tiny_fresh, say=lambda m: None)
    assert res.n_units == 2 * (1 + 2 + 1) and res.n_computed == 8 and not res.failures
    assert (res.folder / "COMPLETE").exists() and "| oracle" in res.markdown
    rows = results(res.folder)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    by = {c: [r for r in rows if r["contender"] == c] for c in ("icl", "ttt-self-edit", "oracle")}
    assert [r["edit_status"] for r in by["icl"]] == ["icl", "icl"] and all(r["train"] is None for r in by["icl"])
    assert [r["edit_status"] for r in by["oracle"]] == ["ok", "ok"]
    assert all(r["train"]["steps"] > 0 and 0 < r["n_ttt_examples"] <= 4 for r in by["oracle"])
    # a random model writes gibberish configs: recorded invalid with a reason, reward 0, never trained
    assert all(r["edit_status"] == "invalid" and r["reason"] and r["reward"] == 0.0 and r["train"] is None
               and isinstance(r["self_edit"], str) for r in by["ttt-self-edit"])
    for r in by["icl"] + by["oracle"]:
        (p,) = r["predictions"]
        assert p["n_prompts"] == 1 and len(p["completions"]) <= 2 and r["test_solved"] == [r["solved"]]
        assert set(r["timing"]) >= {"generate_s", "data_s", "train_s", "answer_s", "batch_edits"}
    table = res.rows
    assert metric(table, "ttt-self-edit", "invalid_edits")["value"] == 4.0
    assert metric(table, "ttt-self-edit", "pairs_solved")["n"] == 4 and metric(table, "oracle", "pairs_solved")["unit"] == "pairs"
    assert metric(table, "oracle", "task_pass2")["unit"] == "tasks" and metric(table, "icl", "failed_units")["value"] == 0
    assert metric(table, "oracle", "task_pass2", "task=mini0-001-flip_lr")["n"] == 1
    for name in ("icl", "ttt-self-edit", "oracle"):   # every contender has its timing rows (compare needs them)
        assert {"seconds_per_edit", "answer_s", "data_s", "train_s", "generate_s"} <= \
            {r["metric"] for r in table if r["contender"] == name}
    assert all(r["grader"] == "exact-grid" and r["task"] == "seal_arc_mini" for r in table)
    # resume: the same config again computes nothing and gives the same numbers
    again = run(cfg, progress=False, loaded=tiny_fresh, say=lambda m: None)
    assert again.folder == res.folder and again.n_computed == 0 and len(results(res.folder)) == 8
    strip = lambda t: [{k: v for k, v in r.items() if k != "written"} for r in t]  # noqa: E731
    assert json.dumps(strip(again.rows), default=str) == json.dumps(strip(table), default=str)


def test_resume_after_a_kill(tmp_path, tiny_fresh, monkeypatch):
    """A run killed after its first batch keeps that batch's rows; the re-run computes only the rest."""
    cfg = arc_config(tmp_path, contenders=("icl", "oracle"), n_tasks=3, edits_per_batch=1)
    real, calls = type(FAMILY).run, []

    def dying(self, engine, batch, *args):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill, between the first and the second batch
        return real(self, engine, batch, *args)

    monkeypatch.setattr(type(FAMILY), "run", dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False, loaded=tiny_fresh, say=lambda m: None)
    (folder,) = (tmp_path / "reports").iterdir()
    first = results(folder)
    assert len(first) == calls[0] and not (folder / "COMPLETE").exists()
    monkeypatch.setattr(type(FAMILY), "run", real)
    res = run(cfg, progress=False, loaded=tiny_fresh, say=lambda m: None)
    assert res.folder == folder and res.n_computed == 6 - len(first) and (folder / "COMPLETE").exists()
    assert results(folder)[:len(first)] == first and len(results(folder)) == 6


def test_guided_edits_are_valid_and_trained(tmp_path, tiny_fresh):
    cfg = arc_config(tmp_path, contenders=("ttt-self-edit",), n_tasks=1, edit_format="guided")
    res = run(cfg, progress=False, loaded=tiny_fresh, say=lambda m: None)
    rows = results(res.folder)
    assert len(rows) == 2 and all(r["edit_status"] in ("ok", "over_budget") for r in rows)
    assert all(r["self_edit"].startswith('{"data_generation"') for r in rows)
    assert any(r["train"] for r in rows) or all(r["edit_status"] == "over_budget" for r in rows)


# ------------------------------------------------------------------------------------ RL
@pytest.fixture
def tiny_dir(tmp_path, tiny_fresh):
    path = tmp_path / "tinymodel"
    tiny_fresh.model.save_pretrained(path)
    tiny_fresh.tokenizer.save_pretrained(path)
    return str(path)


def small_rl(model: str) -> RLConfig:
    return RLConfig(task="seal_arc_mini", model=model, n_items=2, k=2, repeats=1, rounds=1, keep="all-correct",
                    device="cpu", max_new_tokens=24, edit_format="free", ttt={**SMALL_TTT, "step_budget": 24},
                    inner_lora={"r": 4, "alpha": 8}, sft_lora={"r": 4, "alpha": 8},
                    sft={"learning_rate": 3e-3, "epochs": 2})


def test_arc_rl_round_keeps_every_correct_config_and_fine_tunes_the_policy(tmp_path, tiny_dir, monkeypatch):
    """One ReST-EM round through the shared loop. A random model cannot solve a task, so sample 0 of
    the first task is rewarded 1 (sampling, parsing and TTT still run for real)."""
    import torch

    from sealbench.engine.models import load_model
    from sealbench.families.arc.rl import ArcRL
    from sealbench.rl import train

    real = ArcRL.reward
    first = load_tasks("mini-train", n_tasks=1)[0]
    seen = []

    def reward(self, engine, batch, cfg):
        out = real(self, engine, batch, cfg)
        seen.extend(out)
        for (task, text, seed), o in zip(batch, out):
            if task.id == first.id and not any(s[0] == task.id for s in marked):
                marked.append((task.id, text))
                o["reward"] = 1.0
        return out

    marked = []
    monkeypatch.setattr(ArcRL, "reward", reward)
    policy = train(small_rl(tiny_dir), tmp_path / "reports", progress=False, say=lambda m: None)
    rdir = policy.folder / "round_1"
    for name in ("samples.jsonl", "rewards.jsonl", "kept.json", "policy.json", "stats.json",
                 "policy_adapter.safetensors"):
        assert (rdir / name).exists(), name
    rewards = [json.loads(line) for line in (rdir / "rewards.jsonl").read_text().splitlines()]
    assert len(rewards) == 4 and all(d["edit_status"] in ("ok", "invalid", "over_budget", "train_error")
                                     for r in rewards for d in r["details"])
    kept = json.loads((rdir / "kept.json").read_text())
    assert [(k["item_id"], k["completion"]) for k in kept] == marked
    assert "grid puzzle" in kept[0]["prompt"] and "[" in kept[0]["prompt"]
    stats = json.loads((rdir / "stats.json").read_text())
    assert stats["n_kept"] == 1 and stats["reward_all"]["mean"] == 0.25 and stats["n_items"] == 2
    if kept[0]["completion"].strip():
        assert stats["sft"]["steps"] > 0
        base = dict(load_model(tiny_dir, device="cpu").model.named_parameters())
        merged = policy.load("cpu")
        assert any(not torch.equal(p, base[n]) for n, p in merged.model.named_parameters())
    # resume: nothing is sampled or scored again
    before = (rdir / "rewards.jsonl").read_text()
    seen.clear()
    train(small_rl(tiny_dir), tmp_path / "reports", progress=False, say=lambda m: None)
    assert (rdir / "rewards.jsonl").read_text() == before and not seen


def test_arc_rl_rejects_beats_passage_and_unsolved_sets(tmp_path):
    from sealbench.families.arc.rl import ArcRL

    with pytest.raises(ValueError, match="not available for ARC"):
        ArcRL().baselines(None, [], None, 1)
    with pytest.raises(ConfigError, match="keep rule"):
        validate(RLConfig, {"task": "seal_arc_mini", "keep": "beats-passage"}, "rl")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"t1": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}}))
    with pytest.raises(ArcDataError, match="no solutions"):
        ArcRL().train_items(RLConfig(task="seal_arc_mini", train_tasks=str(path), keep="all-correct"), None)


def test_seal_contender_trains_its_policy_then_reuses_it(tmp_path, tiny_dir):
    cfg = arc_config(tmp_path, contenders=("seal",), n_tasks=1, model=tiny_dir, rl_n_tasks=1, seal_preset="tiny")
    res = run(cfg, progress=False, say=lambda m: None)
    assert not res.failures and res.n_units == 2
    (rl_folder,) = (tmp_path / "reports").glob("seal-rl-arc-*")
    policy = json.loads((rl_folder / "round_1" / "policy.json").read_text())
    rows = results(res.folder)
    assert all(r["policy_fingerprint"] == policy["fingerprint"] for r in rows)
    rl_ids = json.loads((rl_folder / "config.json").read_text())["item_ids"]
    assert rl_ids[0].startswith("mini7919-") and not set(rl_ids) & {r["task_id"] for r in rows}
    mtime = (rl_folder / "round_1" / "policy.json").stat().st_mtime
    assert run(cfg, progress=False, say=lambda m: None).n_computed == 0
    assert (rl_folder / "round_1" / "policy.json").stat().st_mtime == mtime


FAST_TTT = """name: ttt-fast
family: arc
adapt: true
edits: fixed
config:
  data_generation: {use_basic_augmentations: true, use_size_augmentations: false,
                    use_chain_augmentations: false, use_repeat_augmentations: false}
  training: {strategy: train_using_output_tokens, learning_rate: 0.002, num_train_epochs: 3}
"""


@pytest.mark.slow
def test_real_model_run_goes_from_wrong_to_right(tmp_path, embedded):
    """The embedded SmolLM2-135M cannot solve a 3x3 colour-map puzzle in context (icl); a fixed
    TTT config (basic augmentations, output tokens, lr 2e-3 x 3 epochs, 12 examples: 18 steps)
    makes it solve it, through the runner, the batched episode and the engine."""
    contender = tmp_path / "ttt-fast.yaml"
    contender.write_text(FAST_TTT)
    cfg = arc_config(tmp_path, contenders=("icl", str(contender)), n_tasks=1, mini_rules=("color_map",),
                     mini_size=(3, 3), ttt={"cap": 12, "step_budget": 100, "predict_transforms": ("identity", "transpose")})
    res = run(cfg, progress=False, loaded=embedded, say=lambda m: None)
    assert not res.failures and res.n_units == 2
    icl, ttt = results(res.folder)
    assert icl["edit_status"] == "icl" and not icl["solved"]
    assert ttt["edit_status"] == "ok" and ttt["train"]["steps"] == 18 and ttt["n_ttt_examples"] == 12
    assert ttt["train"]["epoch_losses"][-1] < ttt["train"]["epoch_losses"][0] / 4
    assert ttt["solved"], ttt["predictions"][0]
    (pred,) = ttt["predictions"]
    task = load_tasks("mini", n_tasks=1, mini_rules=("color_map",), mini_size=(3, 3))[0]
    assert [list(r) for r in task.test_outputs[0]] in pred["attempts"] and pred["n_prompts"] == 2 * 4
    assert metric(res.rows, "ttt-fast", "pairs_solved")["value"] == 1.0
    assert metric(res.rows, "icl", "pairs_solved")["value"] == 0.0
    assert all(r["timing"]["answer_s"] > 0 for r in (icl, ttt)) and ttt["timing"]["train_s"] > 0
