"""SEAL's RL loop (rl/): keep rules, a round end to end with its artifacts, resume after a kill,
held-out accuracy per round, and the policy as an artifact a run finds instead of retraining."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import MADE_UP, MADE_UP_2, write_data_dir
from sealbench import rl
from sealbench.config import RunConfig
from sealbench.engine.lora import AdapterBank
from sealbench.engine.models import load_model
from sealbench.registry import rl_preset
from sealbench.rl import loop as rl_loop
from sealbench.runner import run


def test_keep_rule_top1_selects_exactly_the_best_per_item():
    samples = [{"item_id": "a", "sample": 0, "reward": 0.2}, {"item_id": "a", "sample": 1, "reward": 0.5},
               {"item_id": "b", "sample": 0, "reward": 0.3}, {"item_id": "b", "sample": 1, "reward": 0.3}]
    kept = rl.select_kept(samples, None, "top1")
    assert [(s["item_id"], s["sample"]) for s in kept] == [("a", 1), ("b", 0)]  # ties: lowest index


def test_keep_rule_beats_passage_drops_items_not_beating_their_baseline():
    samples = [{"item_id": "a", "sample": 0, "reward": 0.5}, {"item_id": "b", "sample": 0, "reward": 0.3}]
    kept = rl.select_kept(samples, {"a": 0.4, "b": 0.3}, "beats-passage")
    assert [s["item_id"] for s in kept] == ["a"]
    with pytest.raises(ValueError, match="baselines"):
        rl.select_kept(samples, None, "beats-passage")


def test_keep_rule_all_correct_keeps_every_solved_sample():
    samples = [{"item_id": "t", "sample": i, "reward": r} for i, r in enumerate([1.0, 0.0, 1.0])]
    assert [s["sample"] for s in rl.select_kept(samples, None, "all-correct")] == [0, 2]


def test_every_rl_preset_validates():
    for name in ("tiny", "cpu", "gpu", "paper"):
        cfg = rl_preset(name)
        assert cfg.family == "squad" and cfg.k >= 1
    assert rl_preset("gpu").n_items == 50 and rl_preset("gpu").repeats == 3


@pytest.fixture
def setup(tmp_path, tiny):
    ckpt = tmp_path / "ckpt"
    tiny.model.save_pretrained(ckpt)
    tiny.tokenizer.save_pretrained(ckpt)
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    cfg = rl_preset("tiny", model=str(ckpt), device="cpu", heldout_items=2, max_new_tokens=8,
                    max_answer_tokens=4, edits_per_batch=4)
    return cfg, data, tmp_path / "reports"


def test_a_round_end_to_end_writes_every_artifact(setup):
    cfg, data, reports = setup
    policy = rl.train(cfg, reports, data, progress=False, say=lambda m: None)
    r1 = policy.folder / "round_1"
    for name in ("samples.jsonl", "rewards.jsonl", "kept.json", "policy_adapter.safetensors", "policy.json",
                 "stats.json", "heldout.jsonl"):
        assert (r1 / name).exists(), name
    assert (policy.folder / "round_0" / "heldout.jsonl").exists() and (policy.folder / "COMPLETE").exists()
    stats = json.loads((r1 / "stats.json").read_text())
    assert stats["n_samples"] == 4 and stats["n_kept"] == 2 and stats["sft"]["n_pairs"] >= 1
    rewards = [json.loads(x) for x in (r1 / "rewards.jsonl").read_text().splitlines()]
    assert all(0.0 <= x["reward"] <= 1.0 for x in rewards)
    meta = json.loads((r1 / "policy.json").read_text())
    assert meta["parent_fingerprint"] == "random-0" or len(meta["parent_fingerprint"]) == 16
    assert policy.fingerprint == meta["fingerprint"] != meta["parent_fingerprint"]
    table = [json.loads(x) for x in (policy.folder / "summary.jsonl").read_text().splitlines()]
    metrics = {(t["metric"], t["at"]) for t in table}
    assert {("reward_all", "round=1"), ("heldout_accuracy", "round=0"), ("heldout_accuracy", "round=1"),
            ("heldout_diff", "round=1")} <= metrics
    assert all(t["protocol"] == "rl" and t["task"] == "seal_squad_nocontext" for t in table)
    # the policy is the base model with the round's saved adapter merged (W += alpha/r * (A B)^T),
    # and its PEFT folder loads in peft to the same logits
    loaded = policy.load("cpu", "float32")
    base = load_model(cfg.model, "cpu", "float32")
    state = load_file(str(r1 / "policy_adapter.safetensors"))
    bank = AdapterBank(base.model, 1, cfg.sft_lora)
    bank.load_slot_state(0, state)
    a, b = bank.factors(0)
    expected = base.model.model.layers[0].self_attn.q_proj.base.weight + cfg.sft_lora.alpha / cfg.sft_lora.r * (a[0] @ b[0]).T
    bank.remove()
    assert float(state["B"].abs().max()) > 0  # the SFT moved the adapter
    torch.testing.assert_close(loaded.model.model.layers[0].self_attn.q_proj.weight, expected, rtol=0, atol=1e-6)
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    _assert_same_logits_as_peft(loaded.model, cfg.model, policy.peft_folder, ids)


def _assert_same_logits_as_peft(ours, base_checkpoint, peft_folder, ids, atol=1e-4):
    """PEFT's model from `peft_folder` on a fresh copy of the base gives `ours`'s logits (fp32), and
    they are not the base's: the adapter is really applied."""
    import peft
    from transformers import AutoModelForCausalLM

    config = json.loads((peft_folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(base_checkpoint)
    base = AutoModelForCausalLM.from_pretrained(base_checkpoint, dtype=torch.float32).eval()
    with torch.no_grad():
        plain = base(ids).logits
        theirs = peft.PeftModel.from_pretrained(base, str(peft_folder)).eval()(ids).logits
        mine = ours(ids).logits
    torch.testing.assert_close(theirs, mine, rtol=0, atol=atol)
    assert float((plain - mine).abs().max()) > 50 * atol


@pytest.mark.parametrize("which", ["tiny", pytest.param("embedded", marks=pytest.mark.slow)])
def test_a_policy_of_two_rounds_loads_in_peft_with_the_same_logits(which, tmp_path, request):
    """`write_peft` turns rounds 1..n of flat adapters into one PEFT LoRA (rank n*r, alpha n*alpha):
    PEFT's model gives the logits of sealbench's own policy (the base with each round merged)."""
    from safetensors.torch import save_file

    from sealbench.engine.checkpoints import model_path
    from sealbench.rl.policy import Policy, write_peft

    if which == "tiny":
        checkpoint = tmp_path / "ckpt"
        request.getfixturevalue("tiny").model.save_pretrained(checkpoint)
        request.getfixturevalue("tiny").tokenizer.save_pretrained(checkpoint)
    else:
        checkpoint = model_path("embedded")
    cfg = rl_preset("tiny", model=str(checkpoint), device="cpu", rounds=2)
    scratch = load_model(cfg.model, "cpu", "float32")
    files = []
    for r in (1, 2):
        bank = AdapterBank(scratch.model, 1, cfg.sft_lora)
        bank.reset(0, seed=r)
        with torch.no_grad():
            bank.B[0] = torch.randn(bank.B.shape[1], generator=torch.Generator().manual_seed(r)) * 0.02
        files.append(tmp_path / "rl" / f"round_{r}" / "policy_adapter.safetensors")
        files[-1].parent.mkdir(parents=True)
        save_file(bank.slot_state(0), str(files[-1]))
        bank.remove()
    out = write_peft(scratch.model, files, cfg.sft_lora, str(checkpoint), tmp_path / "rl" / "round_2" / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (2 * cfg.sft_lora.r, 2 * cfg.sft_lora.alpha)
    assert config["target_modules"] == sorted(cfg.sft_lora.targets)
    policy = Policy(tmp_path / "rl", cfg, "fingerprint", [{}, {}])
    assert policy.peft_folder == out
    ids = torch.tensor([[1, 5, 9, 200, 31, 7, 42, 3]])
    # fp32: merged weights (ours) vs unmerged LoRA (PEFT) round differently; 30 layers of SmolLM2
    # with logits of ~20 drift to ~5e-4, 2 tiny layers to ~1e-6
    atol = 1e-4 if which == "tiny" else 2e-3
    _assert_same_logits_as_peft(policy.load("cpu", "float32").model, checkpoint, out, ids, atol)
    with pytest.raises(ValueError, match="does not fit"):
        write_peft(scratch.model, files, cfg.sft_lora.model_copy(update={"r": 8}), "x", tmp_path / "bad")


def test_a_killed_round_resumes_at_the_unit_it_stopped_in(setup, monkeypatch):
    cfg, data, reports = setup
    hooks = type(rl_loop.registry.family(cfg.task).rl)
    real = hooks.reward_stream
    cfg = cfg.updated(edits_per_batch=1, heldout_items=0)

    def dying(self, engine, batch, c, with_notes=True):
        # the queue hands back one edit at a time (K = 1): killed once the first sample's repeats are in
        for n, group in enumerate(real(self, engine, batch, c, with_notes)):
            if n == c.repeats:
                raise KeyboardInterrupt
            yield group
    monkeypatch.setattr(hooks, "reward_stream", dying)
    with pytest.raises(KeyboardInterrupt):
        rl.train(cfg, reports, data, progress=False, say=lambda m: None)
    folder = next(reports.glob("seal-rl-*"))
    assert len((folder / "round_1" / "rewards.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(hooks, "reward_stream", real)
    done = rl.train(cfg, reports, data, progress=False, say=lambda m: None)
    rows = [json.loads(x) for x in (done.folder / "round_1" / "rewards.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len({r["key"] for r in rows}) == 4


def test_an_invalid_self_edit_earns_reward_0_with_its_reason(setup, tiny):
    from sealbench.engine.inner_loop import Engine
    from sealbench.families.squad.data import load_passages

    cfg, data, _ = setup
    cfg = cfg.updated(max_statements=3)
    hooks = rl_loop.registry.family(cfg.task).rl
    p = [x for x in load_passages("train", data) if x.questions][0]
    too_long = "\n".join(f"{i}. a statement about the passage" for i in range(1, 6))
    with Engine(tiny, cfg.inner_lora, 2) as engine:
        out = hooks.reward(engine, [(p, too_long, 1), (p, "1. one statement", 2)], cfg.updated(inner=cfg.inner.model_copy(update={"epochs": 1})))
    assert out[0]["reward"] == 0.0 and "5 statements (limit 3)" in out[0]["details"]["error"]
    assert out[0]["details"]["invalid"] and not out[1]["details"]["invalid"]
    assert out[1]["details"]["error"] is None
    # an invalid self-edit is never kept, even where every sample of the item earned 0
    samples = [{"item_id": p.id, "sample": 0, "reward": 0.0, "invalid": True},
               {"item_id": p.id, "sample": 1, "reward": 0.0, "invalid": False}]
    assert [s["sample"] for s in rl_loop.select_kept(samples, None, "top1")] == [1]
    assert rl_loop.select_kept(samples[:1], None, "top1") == []


def test_the_seal_contender_uses_a_policy_trained_once(setup, monkeypatch):
    cfg, data, reports = setup
    rounds = {"n": 0}
    real = rl_loop._round

    def counting(*a, **k):
        rounds["n"] += 1
        return real(*a, **k)
    monkeypatch.setattr(rl_loop, "_round", counting)
    run_cfg = RunConfig(model=cfg.model, contenders=["passage", "seal"], seal_preset="tiny", n_passages=1, epochs=1,
                        notes_max_tokens=8, max_answer_tokens=4, data_dir=str(data), reports_dir=str(reports),
                        device="cpu", edits_per_batch=4)
    first = run(run_cfg, progress=False, say=lambda m: None)
    assert rounds["n"] == 1
    rows = [json.loads(x) for x in (first.folder / "results.jsonl").read_text().splitlines()]
    seal = [r for r in rows if r["contender"] == "seal"]
    assert seal and seal[0]["policy_fingerprint"] != "random-0" and seal[0]["self_edits"][0] is not None
    second = run(run_cfg.updated(n_passages=2), progress=False, say=lambda m: None)
    assert rounds["n"] == 1 and second.n_reused == 2  # the policy and the first passage's units are reused


def test_a_torn_line_inside_a_round_is_cut_on_resume(setup, monkeypatch):
    """A kill (or a full disk) mid-append leaves a torn last line in round_1/rewards.jsonl: the next
    train-seal cuts it and resumes with no manual step, no row lost or duplicated."""
    cfg, data, reports = setup
    hooks = type(rl_loop.registry.family(cfg.task).rl)
    real = hooks.reward_stream
    cfg = cfg.updated(edits_per_batch=1, heldout_items=0)

    def dying(self, engine, batch, c, with_notes=True):
        for n, group in enumerate(real(self, engine, batch, c, with_notes)):
            if n == c.repeats:
                raise KeyboardInterrupt
            yield group
    monkeypatch.setattr(hooks, "reward_stream", dying)
    with pytest.raises(KeyboardInterrupt):
        rl.train(cfg, reports, data, progress=False, say=lambda m: None)
    folder = next(reports.glob("seal-rl-*"))
    rewards = folder / "round_1" / "rewards.jsonl"
    first = rewards.read_text()
    with open(rewards, "a") as f:  # the half of a row a kill or a full disk leaves
        f.write('{"key": "torn|1", "item_id": "to')
    with open(folder / "round_1" / ".stats.json.abc.tmp", "w") as f:
        f.write("{")
    monkeypatch.setattr(hooks, "reward_stream", real)
    done = rl.train(cfg, reports, data, progress=False, say=lambda m: None)
    text = (done.folder / "round_1" / "rewards.jsonl").read_text()
    assert text.startswith(first) and text.endswith("\n")
    rows = [json.loads(x) for x in text.splitlines()]  # every line parses: the torn one is gone
    assert len(rows) == 4 and len({r["key"] for r in rows}) == 4 and "torn|1" not in {r["key"] for r in rows}
    assert not list(done.folder.rglob(".*.tmp")) and (done.folder / "COMPLETE").exists()


def test_a_full_disk_mid_append_leaves_the_last_whole_row(tmp_path, monkeypatch):
    """ENOSPC after part of a batch of rows is written: one line naming the file and the fix, and the
    file ends at its last whole row (the next run appends cleanly)."""
    import errno
    import os

    from sealbench import store

    folder = store.RunFolder.open(tmp_path, "run", {"a": 1})
    folder.append("x.jsonl", [{"key": "a"}])
    real = os.write

    def full(fd, data):
        real(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store.os, "write", full)
    with pytest.raises(store.StoreError, match="no space left on the device writing .*x.jsonl; free some space"):
        folder.append("x.jsonl", [{"key": "b"}, {"key": "c"}])
    monkeypatch.setattr(store.os, "write", real)
    assert (tmp_path / "run" / "x.jsonl").read_text() == '{"key": "a"}\n'
    folder.append("x.jsonl", [{"key": "b"}])
    assert [r["key"] for r in folder.rows("x.jsonl")] == ["a", "b"]
    folder.close()


@pytest.mark.slow
def test_train_seal_killed_mid_round_resumes_to_the_same_policy_byte_for_byte(tmp_path, tiny):
    """kill -9 while round 1's rows are appended, plus the torn half row such a kill leaves: the next
    `train-seal` (same command, no manual step) ends with the adapter and fingerprint of a run that
    was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    ckpt = tmp_path / "ckpt"
    tiny.model.save_pretrained(ckpt)
    tiny.tokenizer.save_pretrained(ckpt)
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])

    def cmd(reports):
        return [sys.executable, "-m", "sealbench.cli", "train-seal", "--preset", "tiny", "--model", str(ckpt),
                "--device", "cpu", "--heldout-items", "1", "--max-new-tokens", "8", "--max-answer-tokens", "4",
                "--data-dir", str(data), "--reports-dir", str(reports), "--threads", "1", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    assert subprocess.run(cmd(tmp_path / "a"), env=env, capture_output=True).returncode == 0
    proc = subprocess.Popen(cmd(tmp_path / "b"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        rewards = list((tmp_path / "b").glob("seal-rl-*/round_1/rewards.jsonl"))
        if rewards and rewards[0].read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder_b = next((tmp_path / "b").glob("seal-rl-*"))
    assert not (folder_b / "COMPLETE").exists()
    with open(folder_b / "round_1" / "rewards.jsonl", "a") as f:
        f.write('{"key": "half a ro')
    assert subprocess.run(cmd(tmp_path / "b"), env=env, capture_output=True).returncode == 0
    folder_a = next((tmp_path / "a").glob("seal-rl-*"))
    assert folder_a.name == folder_b.name and (folder_b / "COMPLETE").exists()
    for name in ("policy_adapter.safetensors", "kept.json"):
        assert (folder_a / "round_1" / name).read_bytes() == (folder_b / "round_1" / name).read_bytes(), name
    fp = [json.loads((f / "round_1" / "policy.json").read_text())["fingerprint"] for f in (folder_a, folder_b)]
    assert fp[0] == fp[1]
