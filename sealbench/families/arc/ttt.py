"""Test-time training (TTT) for ARC: data from the demonstrations, voting prediction, scoring.

Data (`build_ttt_data`; SEAL `arclib` / Akyürek et al.'s TTT recipe, docs/design.md §1b): from a task's n
demonstrations, leave-1 pseudo-tasks (each demo in turn is the query, the other n-1 are the demos)
and leave-2 pseudo-tasks (two demos left out, each of them in turn the query, n-2 demos kept; needs
n >= 3). Every pseudo-task is rendered once per enabled transform (identity always; an example with
any grid over 30x30 is dropped) and, when enabled, once more with a random colour permutation (0
fixed) and a random demo order. Duplicates are removed keeping the first occurrence (generation
order is fixed, never set order); examples longer than `max_length` tokens are dropped; over `cap`
examples (SEAL: 250) a seeded sample of `cap` is kept, in generation order.

Training texts (`ttt_texts`): (prompt, answer, loss on the prompt?) tuples for the engine
(engine/train.py): prompt and answer are tokenised apart, exactly as at prediction time;
`train_using_output_tokens` puts only the answer "{output}#" and EOS in the loss.

Prediction (`prediction_requests` -> the engine -> `tally`): for each test input, prompts with all
demos and with each demo left out, each under every voting transform (the dihedral group); answers
are parsed, mapped back by the inverse transform and counted; the two most-voted grids (ties: first
seen) are the two attempts. A test input is solved if either attempt equals the answer; a task if
all its test inputs are (`score`).
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

from ...config import TTTSettings
from .augment import (BY_NAME, Pair, Transform, dedup, permute_colors, random_color_permutation,
                      transform_pairs, transforms_for)
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
                   seed: int = 0, tokenizer=None) -> list[TTTExample]:
    """TTT examples for one task (see the module doc), deterministic for a seed. With `tokenizer`,
    examples over `settings.max_length` tokens (as trained: `token_lengths`) are dropped before the cap."""
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
    if tokenizer is not None and examples:
        examples = [e for e, n in zip(examples, token_lengths(tokenizer, examples)) if n <= s.max_length]
    if len(examples) > s.cap:
        keep = sorted(rng.sample(range(len(examples)), s.cap))
        examples = [examples[i] for i in keep]
    return examples


def token_lengths(tokenizer, examples: list[TTTExample]) -> list[int]:
    """Tokens of each example as the engine trains it: prompt (with special tokens) + answer + EOS."""
    if not examples:  # a task whose demonstrations leave no pseudo-task (e.g. a single demo)
        return []
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=True)["input_ids"]
    answers = tokenizer([e.answer for e in examples], add_special_tokens=False)["input_ids"]
    return [len(p) + len(a) + 1 for p, a in zip(prompts, answers)]


def transforms_of(cfg: ArcEditConfig) -> list[Transform]:
    return transforms_for(cfg.use_basic_augmentations, cfg.use_size_augmentations,
                          cfg.use_chain_augmentations, cfg.use_repeat_augmentations)


def ttt_texts(examples: list[TTTExample], output_only: bool) -> list[tuple[str, str, bool]]:
    """Engine training texts (engine/train.py `encode`): (prompt, answer, loss on the prompt too?).
    The engine appends EOS to the answer and tokenises prompt and answer apart, as at prediction."""
    return [(e.prompt, e.answer, not output_only) for e in examples]


# ------------------------------------------------------------------------------------ prediction
def answer_budget(tokenizer, demos: list[Pair], cap: int) -> int:
    """max_new_tokens for a task: 1.5x its longest demo answer (+16), at most `cap` (tokens)."""
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


def prediction_requests(demos: list[Pair], test_inputs: list[Grid],
                        settings: TTTSettings) -> list[tuple[str, int, Transform]]:
    """Every voting prompt of a task: (prompt, test input index, transform), test inputs in order."""
    transforms = [BY_NAME[n] for n in settings.predict_transforms]
    return [(prompt, ti, t) for ti, q in enumerate(test_inputs)
            for prompt, t in prediction_prompts(demos, q, transforms, settings.leave_one_out_prompts)]


def vote(candidates: list[Grid | None], n_attempts: int = 2) -> list[Grid]:
    """The `n_attempts` most frequent grids (ties: the one seen first); None candidates ignored."""
    counts = Counter(c for c in candidates if c is not None)
    first_seen = {}
    for i, c in enumerate(candidates):
        if c is not None and c not in first_seen:
            first_seen[c] = i
    ranked = sorted(counts, key=lambda c: (-counts[c], first_seen[c]))
    return ranked[:n_attempts]


def tally(requests: list[tuple[str, int, Transform]], texts: list[str], n_tests: int, n_attempts: int,
          max_new_tokens: int) -> list[dict]:
    """Per test input, from the completions of `prediction_requests`: {attempts (grids as lists),
    votes, n_prompts, n_parsed, max_new_tokens, completions: [{transform, text, parsed}]}. A
    completion is parsed strictly (grids.parse_grid) and mapped back by its transform's inverse."""
    results = []
    for ti in range(n_tests):
        cands, raws = [], []
        for (_, tj, t), text in zip(requests, texts):
            if tj != ti:
                continue
            g = parse_grid(text)
            back = t.inverse(g) if g is not None else None
            cands.append(back if back is not None and fits(back) else None)
            raws.append({"transform": t.name, "text": text, "parsed": g is not None})
        attempts = vote(cands, n_attempts)
        counts = Counter(c for c in cands if c is not None)
        results.append({"attempts": [list(map(list, a)) for a in attempts],
                        "votes": [counts[a] for a in attempts], "n_prompts": len(cands),
                        "n_parsed": sum(c is not None for c in cands), "max_new_tokens": max_new_tokens,
                        "completions": raws})
    return results


def score(predictions: list[dict], answers: list[Grid]) -> dict:
    """Per test input solved (either attempt exact), and the task solved (all test inputs)."""
    per = []
    for p, a in zip(predictions, answers):
        target = [list(r) for r in a]
        per.append(any(att == target for att in p["attempts"]))
    return {"test_solved": per, "solved": bool(per) and all(per) and len(per) == len(answers)}
