"""The cpt and continual protocols on the real embedded model (tiny settings, made-up passages).

* CPT with N=1 is the single protocol: same passage, texts, seed and config => same predictions.
* Continual: (K+1) x K matrix shape, nulls above the diagonal, row 0 = base model, the first edit of
  every sequence equals the single protocol on that passage, mean/std over sequences, and the base
  weights restored exactly afterwards.
"""
import json
import math

import pytest
import torch

from sealbench.inner_loop import InnerLoop, TrainConfig
from sealbench.protocols import (ContinualConfig, CPTConfig, base_weights, make_config, protocol_run,
                                 run_protocol)
from sealbench.runner import KnowledgeConfig, KnowledgeRun, RunError

from conftest import MADE_UP, MADE_UP_2, write_data_dir

TRAIN = TrainConfig(epochs=6)
COMMON = dict(device="cpu", max_answer_tokens=24, seed=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(write_data_dir(tmp_path_factory.mktemp("data"), [MADE_UP, MADE_UP_2]))


@pytest.fixture(scope="module")
def single(tmp_path_factory, data, embedded):
    """The single protocol on both made-up passages (the reference the others must reproduce)."""
    cfg = KnowledgeConfig(contenders=["base", "passage"], n_passages=2, train=TRAIN, **COMMON)
    run = KnowledgeRun(cfg, tmp_path_factory.mktemp("single"), data, loaded=embedded, progress=False)
    summary = run.run()
    assert summary["complete"]
    return {r["key"]: r for r in run.folder.rows("results.jsonl")}


def _fingerprint(loaded) -> list[float]:
    return [float(p.detach().double().sum()) for _, p in sorted(loaded.model.named_parameters())
            if not p.requires_grad]


def test_cpt_n1_equals_single(tmp_path, data, embedded, single):
    cfg = CPTConfig(contenders=["base", "passage"], n_values=[1, 2], train=TRAIN, **COMMON)
    run = protocol_run("cpt", cfg, tmp_path, data, loaded=embedded, progress=False)
    assert run.folder.path.name.startswith("seal-squad-nocontext-cpt-embedded-")
    summary = run.run()
    assert summary["protocol"] == "cpt" and summary["complete"] and summary["n_values"] == [1, 2]
    rows = run.folder.latest_by_key("results.jsonl")
    pid = rows["passage|N=1"]["passage_ids"][0]
    for name in ("base", "passage"):
        ref = single[f"{name}|{pid}|0"]
        mine = rows[f"{name}|N=1"] if name == "passage" else rows["base|N=all"]
        mine_q = mine["passages"][0]["questions"]
        assert [q["prediction"] for q in mine_q] == [q["prediction"] for q in ref["questions"]], name
        if name == "passage":
            assert mine["seed"] == ref["seed"]
            assert mine["train"]["steps"] == ref["train"]["steps"]
            assert mine["train"]["last_loss"] == pytest.approx(ref["train"]["last_loss"], abs=1e-5)
    # N=2: one adapter on both passages, all 6 questions; accuracy with a CI over the 2 passages.
    two = summary["contenders"]["passage"]["by_n"]["2"]
    assert two["n_passages"] == 2 and two["n_questions"] == 6 and two["accuracy"]["n"] == 2
    assert rows["passage|N=2"]["n_train_sequences"] == 2
    assert summary["contenders"]["base"]["by_n"]["1"]["accuracy"]["mean"] == \
        single[f"base|{pid}|0"]["accuracy"]
    assert "1" in summary["paired_vs_base"]["passage"]
    on_disk = json.loads((run.folder.path / "summary.json").read_text())
    assert on_disk["protocol"] == "cpt"
    # Resume: nothing left to do.
    again = protocol_run("cpt", cfg, tmp_path, data, loaded=embedded, progress=False)
    assert again.folder.path == run.folder.path and again.pending() == []


def test_continual_matrix(tmp_path, data, embedded, single):
    before = _fingerprint(embedded)
    K, S = 2, 2
    cfg = ContinualConfig(contenders=["base", "passage"], n_steps=K, n_sequences=S, train=TRAIN, **COMMON)
    run = protocol_run("continual", cfg, tmp_path, data, loaded=embedded, progress=False)
    summary = run.run()
    assert _fingerprint(embedded) == before, "base weights were not restored exactly"
    assert summary["protocol"] == "continual" and summary["complete"]
    assert "base" in summary["skipped"] and list(summary["contenders"]) == ["passage"]
    s = summary["contenders"]["passage"]
    assert s["n_sequences"] == S
    rows = run.folder.rows("results.jsonl")
    assert len(rows) == S and all(r["status"] == "ok" for r in rows)
    for r in rows:
        m = r["matrix"]
        assert len(m) == K + 1 and all(len(row) == K for row in m)
        assert all(m[0][j] is not None for j in range(K))               # row 0: every passage
        for i in range(1, K + 1):
            assert all(m[i][j] is not None for j in range(i))            # evaluated: 0..i-1
            assert all(m[i][j] is None for j in range(i, K))             # not yet seen
        # Row 0 is the base model; step 1 on the fresh base is the single protocol on that passage.
        for j, pid in enumerate(r["passage_ids"]):
            assert m[0][j] == single[f"base|{pid}|0"]["accuracy"]
        first = r["passage_ids"][0]
        assert m[1][0] == single[f"passage|{first}|0"]["accuracy"]
        assert [a for a, _ in r["steps"][1]["evals"][0]["answers"]] == \
            [q["prediction"] for q in single[f"passage|{first}|0"]["questions"]]
    # Each sequence is a seeded random order of the pool, the same on every call.
    assert all(sorted(r["passage_ids"]) == sorted(p.id for p in run.passages) for r in rows)
    assert [[run.passages[i].id for i in seq] for seq in run.sequences()] == [r["passage_ids"] for r in rows]
    for i in range(K + 1):
        for j in range(K):
            vals = [r["matrix"][i][j] for r in rows if r["matrix"][i][j] is not None]
            if not vals:
                assert s["matrix_mean"][i][j] is None and s["matrix_std"][i][j] is None
                continue
            mean = sum(vals) / len(vals)
            assert s["matrix_mean"][i][j] == pytest.approx(mean)
            assert s["matrix_std"][i][j] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)))
    assert len(s["seen_curve"]) == K + 1 and len(s["retention_by_age"]) == K
    assert s["accuracy"]["n"] == S and "train_s" in s["timing"] and "merge_s" in s["timing"]
    # The made-up facts are learned by the first edit (the base model knows none of them).
    assert all(v == 0.0 for v in s["matrix_mean"][0])
    assert max(v for row in s["matrix_mean"][1:] for v in row if v is not None) > 0.0


def test_restore_base_weights_roundtrip(embedded):
    from sealbench.protocols import restore_base_weights

    loop = InnerLoop(embedded)
    state = base_weights(loop)
    assert state and all(".base_layer." in n for n in state)
    before = _fingerprint(embedded)
    loop.reset(1)
    with torch.no_grad():
        for layer in loop._lora_layers:
            layer.lora_B["default"].weight.fill_(0.01)
    loop.merge_into_base()
    assert _fingerprint(embedded) != before
    restore_base_weights(loop, state)
    assert _fingerprint(embedded) == before


def test_configs_validate_and_convert():
    with pytest.raises(RunError):
        CPTConfig(n_values=[])
    with pytest.raises(RunError):
        ContinualConfig(n_steps=4, n_passages=2)
    assert CPTConfig(n_values=[8, 2, 2]).n_values == [2, 8]
    assert CPTConfig(n_values=[8, 2]).n_passages == 8
    assert ContinualConfig(n_steps=3).n_passages == 3
    c = make_config("cpt", n_values=[1], seed=5, unknown_field=1)
    assert isinstance(c, CPTConfig) and c.seed == 5 and c.train.epochs == 3 and c.train.batch_size == 4 and c.train.grad_accum_steps == 2
    with pytest.raises(RunError):
        make_config("nope")
