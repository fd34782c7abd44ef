"""Guided ARC self-edits: always-valid configs whose every field is the model's own sampled choice,
one per seed, from the engine's base weights; and the family's self-edit sampling."""
from __future__ import annotations

import math
import random

import pytest
import torch

from sealbench.config import LoRASettings, RunConfig
from sealbench.engine.inner_loop import Engine, format_prompt
from sealbench.families.arc import guided
from sealbench.families.arc.family import FAMILY
from sealbench.families.arc.data import mini_task
from sealbench.families.arc.self_edit import edit_prompt, parse_config


@pytest.fixture
def engine(tiny):
    from sealbench.engine.models import tiny_random_model

    with Engine(tiny_random_model(seed=5, vocab_from=tiny), LoRASettings(r=4, alpha=8), n_slots=2) as e:
        yield e


def prompt_of(engine, rule="flip_lr") -> str:
    return format_prompt(engine.tokenizer, edit_prompt(mini_task(rule, 0).train), "chat")


def test_guided_configs_are_valid_deterministic_and_per_row(engine):
    p, q = prompt_of(engine), prompt_of(engine, "rot90")
    texts = guided.guided_configs(engine, [p] * 6, list(range(6)))
    assert len(texts) == 6
    for t in texts:
        parsed = parse_config(t)
        assert parsed.valid, (parsed.reason, t)
        assert f"{parsed.config.learning_rate:g}" in {f"{float(v):g}" for v in guided.LEARNING_RATES}
        assert str(parsed.config.num_train_epochs) in guided.EPOCHS
    assert guided.guided_configs(engine, [p] * 6, list(range(6))) == texts       # same seeds, same configs
    assert len(set(texts)) > 1                                                     # sampling, not a constant
    # a row depends only on its own prompt and seed, not on what is sampled beside it
    assert guided.guided_configs(engine, [q, p, q], [9, 3, 1])[1] == texts[3]


def test_guided_uses_the_base_weights_not_a_trained_adapter(engine):
    """The engine's model with no routing is the base (or policy) model: a trained slot is ignored."""
    from sealbench.config import TrainSettings
    from sealbench.engine.train import EditJob

    p = prompt_of(engine)
    before = guided.guided_configs(engine, [p] * 4, [0, 1, 2, 3], temperature=0.0)
    engine.train([EditJob(["lots of text " * 20], TrainSettings(learning_rate=0.05, epochs=3), 0)])
    assert guided.guided_configs(engine, [p] * 4, [0, 1, 2, 3], temperature=0.0) == before


def test_value_logprobs_equal_the_full_sequence_logprob(engine):
    """The cached, branch-per-value scores equal log p(value | context) from one plain forward pass."""
    from transformers import DynamicCache

    model, tok = engine.loaded.model, engine.tokenizer
    context = guided._ids(tok, prompt_of(engine)) + guided._ids(tok, ', "learning_rate":')
    values = tuple(" " + v for v in guided.LEARNING_RATES)  # multi-token values
    assert any(len(guided._ids(tok, v)) > 1 for v in values)
    cache = DynamicCache()
    last = guided._extend(model, cache, context, "cpu")[-1]
    cached = guided.value_logprobs(model, cache, last, tok, values, "cpu")
    for v, got in zip(values, cached):
        ids = context + guided._ids(tok, v)
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        want = sum(float(logp[i - 1, ids[i]]) for i in range(len(context), len(ids)))
        assert got == pytest.approx(want, abs=1e-3)


def test_sample_from_follows_the_softmax():
    rng = random.Random(0)
    draws = [guided.sample_from([0.0, math.log(3.0)], 1.0, rng) for _ in range(4000)]
    assert 0.72 < sum(draws) / len(draws) < 0.78                          # p(1) = 3/4
    assert guided.sample_from([0.5, 2.0, 2.0], 0.0, rng) == 1             # greedy, first of ties
    sharp = [guided.sample_from([0.0, 1.0], 0.05, rng) for _ in range(200)]
    assert sum(sharp) == 200                                              # low temperature ~ argmax


def test_family_sample_edits_free_and_guided(engine):
    from sealbench import registry

    c = registry.load_contender("ttt-self-edit", "arc")
    p = prompt_of(engine)
    guided_cfg = RunConfig(task="seal_arc_mini", edit_format="guided")
    got = FAMILY.sample_edits(engine, c, [p, p], [1, 2], guided_cfg)
    assert [parse_config(t).valid for t in got] == [True, True]
    free = FAMILY.sample_edits(engine, c, [p, p], [1, 2], RunConfig(task="seal_arc_mini", notes_max_tokens=8))
    assert FAMILY.sample_edits(engine, c, [p], [2], RunConfig(task="seal_arc_mini", notes_max_tokens=8)) == free[1:]
    seen = []
    real = engine.generate
    engine.generate = lambda reqs, *a, **k: seen.extend(reqs) or real(reqs, *a, **k)
    FAMILY.sample_edits(engine, c, [p], [7], RunConfig(task="seal_arc_mini", notes_max_tokens=8))
    FAMILY.sample_edits(engine, c, [p], [7], RunConfig(task="seal_arc_mini"))
    assert [(r.slot, r.max_new_tokens, r.temperature, r.top_p, r.seed) for r in seen] == [
        (None, 8, c.temperature, c.top_p, 7), (None, c.max_new_tokens, c.temperature, c.top_p, 7)]
    with pytest.raises(ValueError, match="edit_format"):
        guided.sample_edit_texts(engine, [p], [0], "json-mode", 1.0, 0.95, 8)
