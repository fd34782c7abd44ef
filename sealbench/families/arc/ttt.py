"""Test-time training (TTT) for ARC: data from the demonstrations, training, and voting prediction.

Data (`build_ttt_data`): from a task's n demonstrations, leave-1 pseudo-tasks (each demo in turn is
the query, the other n-1 are the demos) and leave-2 pseudo-tasks (two demos left out, each of them in
turn the query, n-2 demos kept; needs n >= 3). Every pseudo-task is rendered once per enabled
transform (identity always; an example with any grid over 30x30 is dropped) and, when enabled,
once more with a random colour permutation (0 fixed) and a random demo order. Duplicates are removed
keeping the first occurrence (generation order is fixed, never set order); over `cap` examples
(SEAL: 250) a seeded sample of `cap` is kept, in generation order.

Training (`train_ttt`): a prompt/answer pair is tokenised as prompt ids + answer ids + EOS (the
prompt ends in " -> ", exactly what the model sees at prediction time). `train_using_all_tokens`
puts every real token in the loss; `train_using_output_tokens` only the answer ("{output}#") and
EOS (labels -100 on the prompt). Padding is never in the loss. Batch size 2, cosine schedule, AdamW
on the InnerLoop's resettable LoRA adapter.

Prediction (`predict`): for each test input, prompts with all demos and with each demo left out,
each under every geometric transform (the dihedral group); answers are parsed, mapped back by the
inverse transform and counted; the two most-voted grids (ties: first seen) are the two attempts.
A test input is solved if either attempt equals the answer; a task if all its test inputs are.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from ..inner_loop import InnerLoop, TrainConfig, TrainingError, TrainStats
from .augment import (BY_NAME, GEOMETRIC, Pair, Transform, dedup,
                      permute_colors, random_color_permutation, transform_pairs, transforms_for)
from .grids import Grid, answer_text, fits, parse_grid, task_prompt
from .self_edit import ArcEditConfig


@dataclass
class TTTExample:
    prompt: str
    answer: str
    transform: str
    leave: int
    permuted: bool = False

    @property
    def text(self) -> str:
        return self.prompt + self.answer


@dataclass
class TTTSettings:
    """Knobs of TTT data, training and prediction that are not in the self-edit (run config)."""
    cap: int = 250                       # max TTT examples per edit (SEAL: 250)
    leave: tuple[int, ...] = (1, 2)      # leave-n pseudo-tasks
    permute_colors: bool = True
    permute_order: bool = True
    max_length: int = 2048               # TTT examples longer than this (tokens) are dropped
    batch_size: int = 2                  # SEAL: 2
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    step_budget: int = 375               # SEAL: epochs x examples / 2 > 375 => over budget
    predict_transforms: tuple[str, ...] = tuple(t.name for t in GEOMETRIC)
    leave_one_out_prompts: bool = True
    n_attempts: int = 2
    max_new_tokens: int = 2048           # hard cap; the per-task cap is estimated from the demos
    gen_batch_size: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ data
def leave_out_tasks(demos: list[Pair], leave: tuple[int, ...] = (1, 2)) -> list[tuple[list[Pair], Pair, int]]:
    """(demos, query pair, n left out) pseudo-tasks, in a fixed order."""
    out = []
    n = len(demos)
    for k in leave:
        if n - k < 1:
            continue
        for combo in itertools.combinations(range(n), k):
            kept = [demos[i] for i in range(n) if i not in combo]
            for q in combo:
                out.append((kept, demos[q], k))
    return out


def build_ttt_data(demos: list[Pair], transforms: list[Transform], settings: TTTSettings | None = None,
                   seed: int = 0, length_fn=None) -> list[TTTExample]:
    """TTT examples for one task (see the module doc). `length_fn(text) -> tokens` enables max_length."""
    s = settings or TTTSettings()
    rng = random.Random(seed)
    examples: list[TTTExample] = []
    for kept, query, k in leave_out_tasks(list(demos), s.leave):
        for t in transforms:
            pairs = transform_pairs(kept + [query], lambda g, t=t: t.apply(g))
            if pairs is None:
                continue  # a grid over 30x30
            examples.append(TTTExample(task_prompt(pairs[:-1], pairs[-1][0]), answer_text(pairs[-1][1]),
                                       t.name, k))
            if s.permute_colors or s.permute_order:
                if s.permute_colors:
                    perm = random_color_permutation(rng)
                    pairs = [(permute_colors(i, perm), permute_colors(o, perm)) for i, o in pairs]
                shown = pairs[:-1]
                if s.permute_order:
                    shown = list(shown)
                    rng.shuffle(shown)
                examples.append(TTTExample(task_prompt(shown, pairs[-1][0]), answer_text(pairs[-1][1]),
                                           t.name, k, permuted=True))
    examples = dedup(examples, key=lambda e: e.text)
    if length_fn is not None:
        examples = [e for e in examples if length_fn(e.text) <= s.max_length]
    if len(examples) > s.cap:
        keep = sorted(rng.sample(range(len(examples)), s.cap))
        examples = [examples[i] for i in keep]
    return examples


def transforms_of(cfg: ArcEditConfig) -> list[Transform]:
    return transforms_for(cfg.use_basic_augmentations, cfg.use_size_augmentations,
                          cfg.use_chain_augmentations, cfg.use_repeat_augmentations)


# ------------------------------------------------------------------------------------ training
def ttt_texts(examples: list[TTTExample], output_only: bool) -> list[tuple[str, str, bool]]:
    """InnerLoop training texts: (prompt, answer, loss on the prompt too?). The answer gets EOS
    appended by the inner loop; prompt and answer are tokenised separately, as at prediction."""
    return [(e.prompt, e.answer, not output_only) for e in examples]


def train_ttt(loop: InnerLoop, examples: list[TTTExample], cfg: ArcEditConfig, settings: TTTSettings,
              seed: int = 0) -> TrainStats:
    """Train the loop's current adapter (call `loop.reset` first) on TTT examples per `cfg`."""
    if not examples:
        raise TrainingError("no TTT examples to train on")
    train = TrainConfig(learning_rate=cfg.learning_rate, epochs=cfg.num_train_epochs,
                        batch_size=max(1, settings.batch_size), max_length=settings.max_length,
                        lr_schedule=settings.lr_schedule, warmup_steps=settings.warmup_steps)
    return loop.train(ttt_texts(examples, cfg.output_tokens_only), train, seed=seed)


# ------------------------------------------------------------------------------------ prediction
@torch.no_grad()
def generate_grids(loop: InnerLoop, prompts: list[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy completions, batched with left padding, stopping at the end marker '#' or EOS."""
    if not prompts:
        return []
    tok = loop.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "left"
    outputs = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    try:
        with loop.fast_generation():  # merged adapter weights on CUDA (generation is launch-bound)
            for b in range(0, len(order), batch_size):
                idx = order[b: b + batch_size]
                enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                          add_special_tokens=True).to(loop.device)
                out = loop.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          temperature=None, top_p=None, top_k=None,
                                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                          stop_strings=["#"], tokenizer=tok)
                new = out[:, enc["input_ids"].shape[1]:]
                for j, i in enumerate(idx):
                    outputs[i] = tok.decode(new[j], skip_special_tokens=True)
    finally:
        tok.padding_side = old_side
    return outputs


def answer_budget(tokenizer, demos: list[Pair], cap: int) -> int:
    """max_new_tokens for a task: 1.5x its longest demo answer (+16), at most `cap`."""
    longest = max(len(tokenizer(answer_text(o), add_special_tokens=False)["input_ids"]) for _, o in demos)
    return min(cap, int(1.5 * longest) + 16)


def prediction_prompts(demos: list[Pair], query: Grid, transforms: list[Transform],
                       leave_one_out: bool = True) -> list[tuple[str, Transform]]:
    """(prompt, transform) for every demo subset (all demos, and each one left out) x transform."""
    subsets = [list(demos)]
    if leave_one_out and len(demos) >= 2:
        subsets += [[d for j, d in enumerate(demos) if j != i] for i in range(len(demos))]
    out = []
    for t in transforms:
        q = t.apply(query)
        if q is None:
            continue
        for subset in subsets:
            pairs = transform_pairs(subset, lambda g, t=t: t.apply(g))
            if pairs is None:
                continue
            out.append((task_prompt(pairs, q), t))
    return out


def vote(candidates: list[Grid | None], n_attempts: int = 2) -> list[Grid]:
    """The `n_attempts` most frequent grids (ties: the one seen first); None candidates ignored."""
    counts = Counter(c for c in candidates if c is not None)
    first_seen = {}
    for i, c in enumerate(candidates):
        if c is not None and c not in first_seen:
            first_seen[c] = i
    ranked = sorted(counts, key=lambda c: (-counts[c], first_seen[c]))
    return ranked[:n_attempts]


def predict(loop: InnerLoop, demos: list[Pair], test_inputs: list[Grid], settings: TTTSettings,
            use_base: bool = False) -> list[dict]:
    """For each test input: every raw completion, the voted attempts, vote counts."""
    transforms = [BY_NAME[n] for n in settings.predict_transforms]
    max_new = answer_budget(loop.tokenizer, demos, settings.max_new_tokens)
    all_prompts, meta = [], []
    for ti, q in enumerate(test_inputs):
        for prompt, t in prediction_prompts(demos, q, transforms, settings.leave_one_out_prompts):
            all_prompts.append(prompt)
            meta.append((ti, t))
    if use_base:
        with loop.base_model():
            texts = generate_grids(loop, all_prompts, max_new, settings.gen_batch_size)
    else:
        texts = generate_grids(loop, all_prompts, max_new, settings.gen_batch_size)
    results = []
    for ti in range(len(test_inputs)):
        cands, raws = [], []
        for (tj, t), text in zip(meta, texts):
            if tj != ti:
                continue
            g = parse_grid(text)
            back = None
            if g is not None:
                back = t.inverse(g)
                if not fits(back):
                    back = None
            cands.append(back)
            raws.append({"transform": t.name, "text": text, "parsed": g is not None})
        attempts = vote(cands, settings.n_attempts)
        counts = Counter(c for c in cands if c is not None)
        results.append({"attempts": [list(map(list, a)) for a in attempts],
                        "votes": [counts[a] for a in attempts], "n_prompts": len(cands),
                        "n_parsed": sum(c is not None for c in cands), "max_new_tokens": max_new,
                        "completions": raws})
    return results


def score(predictions: list[dict], answers: list[Grid]) -> dict:
    """Per test input solved (either attempt exact), and the task solved (all test inputs)."""
    per = []
    for p, a in zip(predictions, answers):
        target = [list(r) for r in a]
        per.append(any(att == target for att in p["attempts"]))
    return {"test_solved": per, "solved": bool(per) and all(per) and len(per) == len(answers)}
