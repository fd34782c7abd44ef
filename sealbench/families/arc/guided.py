"""Guided self-edits: the model chooses every field of its ARC config, but only among allowed values.

Asked for free-form JSON, the embedded 135M model almost never writes a valid config (on SEAL's
evaluation tasks, 58 of 60 sampled configs were invalid), so `ttt-self-edit` and `seal` score 0
whatever the model would have chosen. Guided decoding keeps the *choice* with the model and takes
away the *syntax*: the config text is built in the fixed shape of the prompt's example, and at each
field the model's log-probability of every allowed value (given the prompt and the text so far) is
computed and one value is sampled from softmax(log p / temperature). The result is ordinary config
text, parsed and budget-checked like any other self-edit, and it is exactly what the RL loop
fine-tunes the policy on - so RL moves these choice probabilities and nothing else.

Rows are independent: each config is drawn with its own seed from the engine's model with no adapter
routed (the base model, or the SEAL policy whose weights it holds), so a cached config is exactly
what a fresh draw with the same seed would give.

The allowed values are SEAL's tools (four augmentation flags, two loss strategies) and a grid of
learning rates and epoch counts around SEAL's human plan (lr 1e-4, 2 epochs); epochs that exceed
the run's step budget stay possible and are scored over-budget (reward 0), as in SEAL.
"""
from __future__ import annotations

import copy
import math
import random

import torch

from .self_edit import FLAGS, STRATEGIES

LEARNING_RATES = ("0.00001", "0.0001", "0.0003", "0.001", "0.003")
EPOCHS = ("1", "2", "3", "4", "5", "8")
_BOOLS = (" true", " false")

# (fixed text, allowed values) in order; values start with the space that follows the colon, so
# each value is tokenised the way it is written after "key:" (" true" is one token, "true" another).
TEMPLATE: list[tuple[str, tuple[str, ...]]] = [
    ('{"data_generation": {"' + FLAGS[0] + '":', _BOOLS),
    *[(', "' + f + '":', _BOOLS) for f in FLAGS[1:]],
    ('}, "training": {"strategy":', tuple(f' "{s}"' for s in STRATEGIES)),
    (', "learning_rate":', tuple(" " + v for v in LEARNING_RATES)),
    (', "num_train_epochs":', tuple(" " + v for v in EPOCHS)),
]
CLOSING = "}}"


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def _extend(model, cache, ids: list[int], device: str) -> torch.Tensor:
    """Feed `ids` after what `cache` holds; return log-probabilities at each new position."""
    out = model(input_ids=torch.tensor([ids], device=device), past_key_values=cache, use_cache=True)
    return out.logits[0].float().log_softmax(-1)


@torch.no_grad()
def value_logprobs(model, cache, last: torch.Tensor, tokenizer, values: tuple[str, ...], device: str) -> list[float]:
    """log p(value | context) for each value; `last` holds the next-token log-probs of the context."""
    scores = []
    for v in values:
        ids = _ids(tokenizer, v)
        lp = float(last[ids[0]])
        if len(ids) > 1:  # later tokens of a multi-token value: score them on a copy of the cache
            following = _extend(model, copy.deepcopy(cache), ids[:-1], device)
            lp += sum(float(following[j, ids[j + 1]]) for j in range(len(ids) - 1))
        scores.append(lp)
    return scores


def sample_from(scores: list[float], temperature: float, rng: random.Random) -> int:
    """An index drawn from softmax(scores / temperature); temperature 0 = argmax (first on ties)."""
    if temperature <= 0:
        return max(range(len(scores)), key=lambda i: (scores[i], -i))
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    return rng.choices(range(len(scores)), weights=weights)[0]


@torch.no_grad()
def guided_configs(engine, prompts: list[str], seeds: list[int], temperature: float = 1.0) -> list[str]:
    """One config text per (formatted prompt, seed), sampled field by field from the engine's model
    with no adapter routed (its base weights: the base model or the SEAL policy). Row i depends
    only on prompts[i] and seeds[i] (`random.Random(seed)`), so cached edits stay exact; consecutive
    rows with the same prompt (a task's k edits) share its KV cache (one prompt pass; one cache held)."""
    from transformers import DynamicCache

    model, tok, device = engine.loaded.model, engine.tokenizer, engine.device
    held_prompt, held = None, None
    texts = []
    for prompt, seed in zip(prompts, seeds):
        if prompt != held_prompt:
            held_prompt, held = prompt, DynamicCache()
            _extend(model, held, _ids(tok, prompt), device)
        cache = copy.deepcopy(held)
        rng = random.Random(seed)
        text = ""
        for fixed, values in TEMPLATE:
            last = _extend(model, cache, _ids(tok, fixed), device)[-1]
            pick = values[sample_from(value_logprobs(model, cache, last, tok, values, device), temperature, rng)]
            _extend(model, cache, _ids(tok, pick), device)
            text += fixed + pick
        texts.append(text + CLOSING)
    return texts


def sample_edit_texts(engine, prompts: list[str], seeds: list[int], edit_format: str, temperature: float,
                      top_p: float, max_new_tokens: int) -> list[str]:
    """Self-edit texts for formatted prompts, one per seed, from the engine's base weights.

    `free` (SEAL): the model writes the JSON, sampled with temperature / top-p, up to
    `max_new_tokens`, each row with its own seed (engine/generate.py). `guided`: `guided_configs`
    (top-p and max_new_tokens do not apply). Raises ValueError for another format."""
    if edit_format == "guided":
        return guided_configs(engine, prompts, seeds, temperature)
    if edit_format != "free":
        raise ValueError(f"edit_format must be free or guided, got {edit_format!r}")
    from ...engine.generate import GenRequest

    return engine.generate([GenRequest(p, None, max_new_tokens, temperature, top_p, s)
                            for p, s in zip(prompts, seeds)])
