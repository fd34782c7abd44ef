"""SEAL's RL loop: keep rule, a tiny real round end to end, SFT effect, resume, the seal contender."""
import json

import pytest
import torch

from sealbench.rl import SealTrainer, config_from_dict, load_preset, select_kept
from sealbench.runner import KnowledgeConfig, KnowledgeRun
from sealbench.inner_loop import TrainConfig

from conftest import MADE_UP, MADE_UP_2, write_data_dir


def sample(pid, j, reward):
    return {"item_id": pid, "sample": j, "reward": reward, "key": f"{pid}|{j}"}


def test_keep_rule_top1_selects_exactly_the_best_per_passage():
    samples = [sample("a", 0, 0.2), sample("a", 1, 0.8), sample("a", 2, 0.5),
               sample("b", 0, 0.0), sample("b", 1, 0.0), sample("c", 0, 1.0)]
    kept = select_kept(samples, None, "top1")
    assert [(s["item_id"], s["sample"]) for s in kept] == [("a", 1), ("b", 0), ("c", 0)]


def test_keep_rule_beats_passage_drops_passages_not_beating_their_baseline():
    samples = [sample("a", 0, 0.6), sample("a", 1, 0.4), sample("b", 0, 0.5), sample("c", 0, 0.5)]
    kept = select_kept(samples, {"a": 0.5, "b": 0.5, "c": 0.75}, "beats-passage")
    assert [(s["item_id"], s["sample"]) for s in kept] == [("a", 0)]
    with pytest.raises(ValueError):
        select_kept(samples, None, "beats-passage")


def test_keep_rule_all_correct_keeps_every_solved_sample():
    samples = [sample("t2", 1, 1.0), sample("t1", 0, 0.0), sample("t1", 1, 1.0), sample("t1", 2, 1.0),
               sample("t3", 0, 0.0)]
    kept = select_kept(samples, None, "all-correct")
    assert [(s["item_id"], s["sample"]) for s in kept] == [("t1", 1), ("t1", 2), ("t2", 1)]


def test_presets_load_and_bad_configs_are_rejected():
    paper = load_preset("paper")
    assert (paper.k, paper.repeats, paper.rounds, paper.sft_lora.r, paper.sft_lora.alpha) == (5, 3, 2, 64, 128)
    assert paper.sft_train.learning_rate == 3e-4 and paper.sft_train.epochs == 2
    assert load_preset("cpu", rounds=1).rounds == 1
    with pytest.raises(ValueError, match="unknown SEAL RL preset"):
        load_preset("huge")
    with pytest.raises(ValueError, match="keep rule"):
        config_from_dict({"keep": "best3"})
    with pytest.raises(ValueError, match="unknown RL config field"):
        config_from_dict({"epochs": 3})


def tiny_config(**kw):
    return load_preset("tiny", device="cpu", **kw)


@pytest.mark.slow
def test_tiny_rl_round_end_to_end_with_the_real_model(tmp_path):
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    trainer = SealTrainer(tiny_config(), tmp_path / "reports", str(data), progress=False)
    from sealbench.models import load_model
    base = load_model("embedded", device="cpu")
    base_weights = {n: p.detach().clone() for n, p in base.model.named_parameters()}
    policy = trainer.train()
    rdir = trainer.folder.path / "round_1"
    for name in ("notes.jsonl", "samples.jsonl", "kept.jsonl", "policy_adapter.safetensors", "policy.json",
                 "stats.json"):
        assert (rdir / name).exists(), name
    samples = [json.loads(l) for l in (rdir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(0.0 <= s["reward"] <= 1.0 for s in samples)
    kept = [json.loads(l) for l in (rdir / "kept.jsonl").read_text().splitlines()]
    assert len(kept) == 2  # top-1 per passage
    for pair in kept:
        best = max(s["reward"] for s in samples if s["item_id"] == pair["item_id"])
        assert pair["reward"] == best and "Implications:" in pair["prompt"]
    info = json.loads((rdir / "policy.json").read_text())
    assert info["sft"]["loss_after"] < info["sft"]["loss_before"]  # SFT learned the kept notes
    # The policy's modules are LoRA-wrapped in place (names gain `.base_layer`); compare base weights.
    policy_weights = {n.replace(".base_layer", ""): p for n, p in policy.model.named_parameters()
                      if "lora_" not in n}
    assert set(policy_weights) == set(base_weights)
    changed = [n for n, p in policy_weights.items() if not torch.equal(p, base_weights[n])]
    assert changed, "the SFT step must change the policy's weights"
    summary = trainer.summary()
    assert summary["complete"] and summary["rounds"][0]["n_kept"] == 2
    assert summary["rounds"][0]["mean_reward_kept"]["mean"] >= summary["rounds"][0]["mean_reward_all"]["mean"]
    assert policy.fingerprint == info["fingerprint"] != base.fingerprint

    # Resume: a second trainer on the same config does no unit again and yields the same policy.
    again = SealTrainer(tiny_config(), tmp_path / "reports", str(data), progress=False)
    before = (rdir / "samples.jsonl").read_text()
    policy2 = again.train()
    assert (rdir / "samples.jsonl").read_text() == before
    for (n, p), (_, q) in zip(policy.model.named_parameters(), policy2.model.named_parameters()):
        assert torch.equal(p, q), n


def test_resume_after_a_kill_skips_finished_units(tmp_path, monkeypatch):
    """Kill mid-round (simulated by an exception after the first reward), then resume."""
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    cfg = tiny_config(k=2, model=str(tmp_path / "tinymodel"))
    from sealbench.models import tiny_random_model
    tiny = tiny_random_model(seed=0)
    tiny.model.save_pretrained(tmp_path / "tinymodel")
    tiny.tokenizer.save_pretrained(tmp_path / "tinymodel")
    trainer = SealTrainer(cfg, tmp_path / "reports", str(data), progress=False)
    calls = {"n": 0}
    real_reward = SealTrainer._reward

    def dying_reward(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies while computing the second reward
        return real_reward(self, *args, **kw)

    monkeypatch.setattr(SealTrainer, "_reward", dying_reward)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    rdir = trainer.folder.path / "round_1"
    assert len((rdir / "samples.jsonl").read_text().splitlines()) == 1
    assert not (rdir / "policy.json").exists()
    monkeypatch.setattr(SealTrainer, "_reward", real_reward)
    counted = {"n": 0}

    def counting_reward(self, *args, **kw):
        counted["n"] += 1
        return real_reward(self, *args, **kw)

    monkeypatch.setattr(SealTrainer, "_reward", counting_reward)
    SealTrainer(cfg, tmp_path / "reports", str(data), progress=False).train()
    assert counted["n"] == 3  # 4 samples, 1 already rewarded
    keys = [json.loads(l)["key"] for l in (rdir / "samples.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4


def test_heldout_accuracy_is_scored_after_every_round_and_paired_with_round_0(tmp_path):
    from sealbench.models import tiny_random_model
    from sealbench.rl import rl_table

    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    tiny = tiny_random_model(seed=0)
    tiny.model.save_pretrained(tmp_path / "tinymodel")
    tiny.tokenizer.save_pretrained(tmp_path / "tinymodel")
    cfg = tiny_config(model=str(tmp_path / "tinymodel"), heldout_passages=2)
    trainer = SealTrainer(cfg, tmp_path / "reports", str(data), progress=False)
    trainer.train()
    for r in (0, 1):
        rows = [json.loads(l) for l in (trainer.folder.path / f"round_{r}" / "heldout.jsonl").read_text().splitlines()]
        assert sorted(row["passage_id"] for row in rows) == sorted(p.id for p in trainer.heldout)
        assert all(0.0 <= row["accuracy"] <= 1.0 and isinstance(row["text"], str) for row in rows)
    summary = trainer.summary()
    assert [h["round"] for h in summary["heldout"]] == [0, 1]
    assert summary["heldout"][0]["accuracy"]["n"] == 2 and "vs_round_0" not in summary["heldout"][0]
    assert summary["heldout"][1]["vs_round_0"]["n"] == 2
    assert summary["rounds"][0]["heldout_accuracy"] == summary["heldout"][1]["accuracy"]
    table = rl_table(summary)
    assert "Held-out" in table and "| 0 |" in table
    # Resume: nothing is re-scored.
    before = (trainer.folder.path / "round_1" / "heldout.jsonl").read_text()
    SealTrainer(cfg, tmp_path / "reports", str(data), progress=False).train()
    assert (trainer.folder.path / "round_1" / "heldout.jsonl").read_text() == before
    with pytest.raises(ValueError, match="heldout_passages"):
        tiny_config(heldout_passages=-1)


def test_seal_contender_trains_then_reuses_its_policy(tmp_path):
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    from sealbench.models import tiny_random_model
    tiny = tiny_random_model(seed=0)
    tiny.model.save_pretrained(tmp_path / "tinymodel")
    tiny.tokenizer.save_pretrained(tmp_path / "tinymodel")
    cfg = KnowledgeConfig(contenders=["self-notes", "seal"], n_passages=2, device="cpu",
                          model=str(tmp_path / "tinymodel"), seal_preset="tiny", notes_max_tokens=16,
                          train=TrainConfig(epochs=1))
    run = KnowledgeRun(cfg, tmp_path / "reports", str(data), progress=False)
    summary = run.run()
    assert summary["complete"]
    rl_folders = list((tmp_path / "reports").glob("seal-rl-*"))
    assert len(rl_folders) == 1 and (rl_folders[0] / "round_1" / "policy.json").exists()
    seal_rows = [r for r in run.folder.rows("results.jsonl") if r["contender"] == "seal"]
    fingerprint = json.loads((rl_folders[0] / "round_1" / "policy.json").read_text())["fingerprint"]
    assert len(seal_rows) == 2 and all(r["policy_fingerprint"] == fingerprint for r in seal_rows)
    assert "self-notes" in summary["paired_seal_vs"]
    assert summary["seal_rl"]["seal"]["run_id"] == rl_folders[0].name
    assert [rd["round"] for rd in summary["seal_rl"]["seal"]["rounds"]] == [1]
    assert "RL run of `seal`" in (run.folder.path / "summary.md").read_text()
    mtime = (rl_folders[0] / "round_1" / "policy.json").stat().st_mtime
    # A second evaluation run with another seed reuses the cached policy of the same RL config? No:
    # the RL config includes the seed. The same run config resumes and retrains nothing.
    KnowledgeRun(cfg, tmp_path / "reports", str(data), progress=False).run()
    assert (rl_folders[0] / "round_1" / "policy.json").stat().st_mtime == mtime


def test_seal_runs_in_the_cpt_and_continual_protocols_on_its_policy(tmp_path):
    """cpt and continual adapt the SEAL policy (trained once, shared through the reports dir), and its
    rows carry the policy fingerprint."""
    from sealbench.models import tiny_random_model
    from sealbench.protocols import make_config, protocol_run

    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    tiny = tiny_random_model(seed=0)
    tiny.model.save_pretrained(tmp_path / "tinymodel")
    tiny.tokenizer.save_pretrained(tmp_path / "tinymodel")
    common = dict(contenders=["passage", "seal"], n_passages=2, device="cpu", model=str(tmp_path / "tinymodel"),
                  seal_preset="tiny", notes_max_tokens=16)
    cpt = make_config("cpt", n_values=[1, 2], **common)
    cpt.train = TrainConfig(epochs=1, batch_size=4)
    summary = protocol_run("cpt", cpt, tmp_path / "reports", str(data), progress=False).run()
    assert summary["complete"] and summary["n_units_with_rows"] == 4
    (rl_folder,) = list((tmp_path / "reports").glob("seal-rl-*"))
    fingerprint = json.loads((rl_folder / "round_1" / "policy.json").read_text())["fingerprint"]
    assert summary["seal_rl"]["seal"]["run_id"] == rl_folder.name
    cont = make_config("continual", n_steps=2, n_sequences=1, **common)
    cont.train = TrainConfig(epochs=1)
    run = protocol_run("continual", cont, tmp_path / "reports", str(data), progress=False)
    summary = run.run()
    assert summary["complete"]
    rows = {r["contender"]: r for r in run.folder.rows("results.jsonl")}
    assert rows["seal"]["policy_fingerprint"] == fingerprint and "policy_fingerprint" not in rows["passage"]
    assert len(rows["seal"]["matrix"]) == 3 and rows["seal"]["status"] == "ok"
    assert len(list((tmp_path / "reports").glob("seal-rl-*"))) == 1      # the policy was reused
