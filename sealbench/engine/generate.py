"""The inner loop's answering half: one batched generation for many edits' prompts.

Each request names the adapter slot its prompt goes through (None: the frozen base model), so the
questions of K adapted edits, and base-model rows beside them, decode in one batch: rows are
grouped by slot (engine/lora.py routes each group through its adapter) and left-padded.

Sampling is per row and depends on nothing but the row's own seed and step: a Gumbel-max draw
whose noise is a counter-based hash of (seed, step, token id), restricted to the row's top-p
nucleus and scaled by its temperature. A row therefore samples the same text whatever else is in
its batch, which is what lets self-edits be cached by content and runs resume exactly. Greedy rows
(temperature 0) take the argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .lora import AdapterBank

HASH_MULT = 0x45D9F3B        # a well-mixing 32-bit multiplier (products stay inside int64)
MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class GenRequest:
    prompt: str                   # already formatted (chat template applied or not)
    slot: int | None = None       # adapter slot; None = the base model
    max_new_tokens: int = 64
    temperature: float = 0.0      # 0 = greedy
    top_p: float = 1.0
    seed: int = 0                 # sampling seed of this row (ignored when greedy)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = ((x >> 16) ^ x) * HASH_MULT & MASK32
    x = ((x >> 16) ^ x) * HASH_MULT & MASK32
    return (x >> 16) ^ x


def row_uniforms(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """(rows, vocab) uniforms in (0, 1) from (seed, step, token id) alone."""
    h = _hash32(seeds.long() & MASK32)
    h = _hash32(h ^ (step & MASK32))
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.long)
    u = _hash32(h[:, None] ^ ids[None, :])
    return (u.double() + 0.5) / 2.0 ** 32


class _Steps:
    """A logits processor that only counts decoding steps (progress); scores pass unchanged."""

    def __init__(self, fn, total: int):
        self.fn, self.total, self.step = fn, total, 0

    def __call__(self, input_ids, scores):
        self.step += 1
        self.fn(self.step, self.total)
        return scores


class RowSampler:
    """A logits processor: rows with temperature > 0 get top-p-filtered, temperature-scaled logits
    plus seeded Gumbel noise, so the argmax that follows is a sample; greedy rows are untouched."""

    def __init__(self, seeds, temperatures, top_ps, prompt_length: int, device):
        self.seeds = torch.tensor(seeds, dtype=torch.long, device=device)
        self.temps = torch.tensor(temperatures, dtype=torch.float32, device=device)
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32, device=device)
        self.sampled = self.temps > 0
        self.any_sampled = any(t > 0 for t in temperatures)  # known on the host: no wait per step
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.any_sampled:
            return scores
        step = input_ids.shape[1] - self.prompt_length
        logits = scores.float() / torch.where(self.sampled, self.temps, 1.0)[:, None]
        probs = logits.softmax(-1)
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p          # mass strictly before each token
        drop_sorted = before > self.top_ps[:, None]
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        gumbel = -torch.log(-torch.log(row_uniforms(self.seeds, step, scores.shape[-1]))).float()
        noisy = logits.masked_fill(drop, float("-inf")) + gumbel
        return torch.where(self.sampled[:, None], noisy, scores.float()).to(scores.dtype)


def _layout(requests: list[GenRequest], max_rows: int) -> list[list[int]]:
    """Batches of request indices: grouped by slot, longest prompts first inside a group."""
    by_slot: dict[int, list[int]] = {}
    for i, r in enumerate(requests):
        by_slot.setdefault(-1 if r.slot is None else r.slot, []).append(i)
    batches, current = [], []
    for slot in sorted(by_slot):
        members = sorted(by_slot[slot], key=lambda i: (-len(requests[i].prompt), i))
        for start in range(0, len(members), max_rows):
            chunk = members[start:start + max_rows]
            if current and len(current) + len(chunk) > max_rows:
                batches.append(current)
                current = []
            current.extend(chunk)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def generate(model, tokenizer, requests: list[GenRequest], bank: AdapterBank | None = None,
             max_rows: int = 64, stop_strings: list[str] | None = None,
             add_special_tokens: bool = False, progress=None, on_step=None) -> list[str]:
    """Completions (decoded, special tokens skipped, not stripped), in request order.
    `progress(n)`, if given, is called after each batch with the requests it finished, and
    `on_step(step, max_new_tokens)` after each decoding step of a batch (it changes no numbers).

    Rows decode until EOS, a stop string (`stop_strings`, per row) or their own max_new_tokens.
    `max_rows` bounds the rows of one batch (memory). Raises ValueError for a request that names a
    slot while no bank is given.
    """
    if not requests:
        return []
    if bank is None and any(r.slot is not None for r in requests):
        raise ValueError("requests name adapter slots but no adapter bank was given")
    device = next(model.parameters()).device
    out = [""] * len(requests)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for batch in _layout(requests, max_rows):
            rows, routing = _grouped(requests, batch, bank)
            enc = tokenizer([requests[i].prompt for i in rows], return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(device)
            width = enc["input_ids"].shape[1]
            reqs = [requests[i] for i in rows]
            sampler = RowSampler([r.seed for r in reqs], [r.temperature for r in reqs],
                                 [r.top_p for r in reqs], width, device)
            kwargs = dict(max_new_tokens=max(r.max_new_tokens for r in reqs), do_sample=False,
                          temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, logits_processor=[sampler] + ([_Steps(on_step, max(r.max_new_tokens for r in reqs))]
                                                                        if on_step is not None else []))
            if stop_strings:
                kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
            if routing is None:
                new = model.generate(**enc, **kwargs)[:, width:]
            else:
                with bank.route(routing):
                    new = model.generate(**enc, **kwargs)[:, width:]
            seen = set()
            for j, i in enumerate(rows):
                if i in seen:  # a filler row (a repeated request) is dropped
                    continue
                seen.add(i)
                out[i] = tokenizer.decode(new[j, :requests[i].max_new_tokens], skip_special_tokens=True)
            if progress is not None:
                progress(len(seen))
    finally:
        tokenizer.padding_side = old_side
    return out


def _grouped(requests, batch: list[int], bank: AdapterBank | None):
    """Row order and routing for one batch: equal-size slot groups (padded with repeated rows)
    when that wastes little, else one routed row per group. No routing if only base rows."""
    slots = [requests[i].slot for i in batch]
    if bank is None or all(s is None for s in slots):
        return batch, None
    groups: dict[int | None, list[int]] = {}
    for i, s in zip(batch, slots):
        groups.setdefault(s, []).append(i)
    m = max(len(g) for g in groups.values())
    if m * len(groups) <= 1.5 * len(batch):
        rows = [i for g in groups.values() for i in g + [g[-1]] * (m - len(g))]
        return rows, bank.routing_for([s for s, g in groups.items() for _ in range(m)])
    return batch, bank.routing_for(slots)
