"""Guided ARC self-edits: always-valid configs whose every field is the model's own sampled choice."""
from __future__ import annotations

import math
import random

import pytest
import torch

from sealbench.arc import guided
from sealbench.arc.data import mini_task
from sealbench.arc.self_edit import edit_prompt, parse_config
from sealbench.inner_loop import InnerLoop, LoRAConfig, format_prompt


@pytest.fixture
def loop(tiny):
    return InnerLoop(tiny, LoRAConfig(r=4, alpha=8))


def prompt_of(loop) -> str:
    return format_prompt(loop.tokenizer, edit_prompt(mini_task("flip_lr", 0).train), "chat")


def test_guided_configs_are_valid_and_deterministic(loop):
    p = prompt_of(loop)
    texts = guided.guided_configs(loop, p, k=6, seed=3)
    assert len(texts) == 6
    for t in texts:
        parsed = parse_config(t)
        assert parsed.valid, (parsed.reason, t)
        assert f"{parsed.config.learning_rate:g}" in {f"{float(v):g}" for v in guided.LEARNING_RATES}
        assert str(parsed.config.num_train_epochs) in guided.EPOCHS
    assert guided.guided_configs(loop, p, k=6, seed=3) == texts          # same seed, same configs
    others = [guided.guided_configs(loop, p, k=6, seed=s) for s in (4, 5, 6)]
    assert any(o != texts for o in others)                                # sampling, not a constant


def test_value_logprobs_equal_the_full_sequence_logprob(loop):
    """The cached, branch-per-value scores equal log p(value | context) from one plain forward pass."""
    from transformers import DynamicCache

    model, tok = loop.model, loop.tokenizer
    context = guided._ids(tok, prompt_of(loop)) + guided._ids(tok, ', "learning_rate":')
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


def test_sample_configs_guided_format(loop):
    from sealbench.arc.run import ArcRunError, sample_configs

    task = mini_task("rot180", 1)
    got = sample_configs(loop, [task], k=2, seed=0, style="chat", edit_format="guided")[task.id]
    assert [parse_config(g["text"]).valid for g in got] == [True, True]
    assert all(g["generate_s"] > 0 for g in got)
    with pytest.raises(ArcRunError, match="edit_format"):
        sample_configs(loop, [task], k=1, seed=0, edit_format="json-mode")
