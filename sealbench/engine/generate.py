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


class RowSampler:
    """Next tokens from logits: rows with temperature > 0 take the argmax of top-p-filtered,
    temperature-scaled logits plus seeded Gumbel noise (a sample), greedy rows the plain argmax."""

    def __init__(self, seeds, temperatures, top_ps, device):
        self.seeds = torch.tensor(seeds, dtype=torch.long, device=device)
        self.temps = torch.tensor(temperatures, dtype=torch.float32, device=device)
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32, device=device)
        self.sampled = self.temps > 0
        self.any_sampled = any(t > 0 for t in temperatures)  # known on the host: no wait per step

    def __call__(self, logits: torch.Tensor, step) -> torch.Tensor:
        """(rows, vocab) logits at decoding step `step` (int or 0-dim device tensor) -> (rows,) ids."""
        scores = logits.float()
        if not self.any_sampled:
            return scores.argmax(-1)
        scaled = scores / torch.where(self.sampled, self.temps, 1.0)[:, None]
        probs = scaled.softmax(-1)
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p          # mass strictly before each token
        drop_sorted = before > self.top_ps[:, None]
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        gumbel = -torch.log(-torch.log(row_uniforms(self.seeds, step, scores.shape[-1]))).float()
        noisy = scaled.masked_fill(drop, float("-inf")) + gumbel
        return torch.where(self.sampled[:, None], noisy, scores).argmax(-1)


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
             add_special_tokens: bool = False, progress=None, on_step=None,
             static: bool | None = None) -> list[str]:
    """Completions (decoded, special tokens skipped, not stripped), in request order.
    `progress(n)`, if given, is called after each batch with the requests it finished, and
    `on_step(step, max_new_tokens)` after each decoding step of a batch (it changes no numbers).

    Rows decode until EOS, a stop string (`stop_strings`: the completion ends where the first one
    ends) or their own max_new_tokens. `max_rows` bounds the rows of one batch (memory). `static`:
    decode with the static cache and, on CUDA, a captured step (`_Decoder`) on CUDA by default
    (None), always (True: its CPU form, for tests) or never (False: transformers' generate, which
    is faster on a CPU, where a step attends to the whole static cache). Raises ValueError for a
    request that names a slot while no bank is given.
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
            reqs = [requests[i] for i in rows]
            decoder = _Decoder(model, tokenizer, enc["input_ids"], enc["attention_mask"], reqs, stop_strings,
                               device.type == "cuda" if static is None else static)
            if routing is None:
                new = decoder.run(on_step)
            else:
                with bank.route(routing):
                    new = decoder.run(on_step)
            seen = set()
            for j, i in enumerate(rows):
                if i in seen:  # a filler row (a repeated request) is dropped
                    continue
                seen.add(i)
                out[i] = _cut(tokenizer.decode(new[j, :requests[i].max_new_tokens], skip_special_tokens=True),
                              stop_strings)
            if progress is not None:
                progress(len(seen))
    finally:
        tokenizer.padding_side = old_side
    return out


def _cut(text: str, stops: list[str] | None) -> str:
    """`text` up to the end of its first stop string (where the row would have stopped)."""
    ends = [text.find(s) + len(s) for s in stops or () if s and s in text]
    return text[:min(ends)] if ends else text


def static_decoding(model) -> bool:
    """Whether `model` decodes with the static cache (_Decoder): every layer attends to the whole
    context. Sliding-window layers (Gemma 3) need per-layer masks: those models use transformers'
    `generate` instead."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return not getattr(config, "sliding_window", None) or not getattr(config, "use_sliding_window", True)


class _Decoder:
    """One batch's decoding with a static KV cache (transformers' StaticCache): the prompts are
    prefilled in one pass, then every step feeds each row's last token with the same shapes and
    buffers (an additive attention mask over the whole cache, position ids, a step counter on the
    device), so on CUDA the step (model, sampling, end-of-row bookkeeping) is captured once in a
    CUDA graph and replayed: a step then costs its kernels' device time instead of ~1,400 kernel
    launches from Python (~80 ms a step on the H200 host, measured with transformers' generate).
    The host looks at the rows every `CHECK_EVERY` steps (all finished? a stop string?). Rows are
    left-padded; a pad position attends to itself only (never read by a real position), so nothing
    is undefined. Tokens after a row's end are the pad token, as transformers' generate writes them.
    Models with sliding-window layers fall back to transformers' generate (`static_decoding`)."""

    CHECK_EVERY = 16

    def __init__(self, model, tokenizer, input_ids, attention_mask, reqs: list[GenRequest], stop_strings,
                 static: bool = True):
        self.static = static
        self.model, self.tokenizer, self.reqs = model, tokenizer, reqs
        self.ids, self.mask2d = input_ids, attention_mask
        self.stops = [s for s in stop_strings or () if s]
        self.device = input_ids.device
        self.max_new = max(r.max_new_tokens for r in reqs)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.sampler = RowSampler([r.seed for r in reqs], [r.temperature for r in reqs],
                                  [r.top_p for r in reqs], self.device)

    def run(self, on_step=None) -> torch.Tensor:
        """(rows, max_new_tokens) new token ids, pad after each row's end."""
        if self.max_new < 1:
            return self.ids.new_full((self.ids.shape[0], 0), self.pad)
        if not (self.static and static_decoding(self.model)):
            return self._hf_generate(on_step)
        from transformers import StaticCache

        rows, width = self.ids.shape
        device, dtype = self.device, next(self.model.parameters()).dtype
        total = width + self.max_new
        real = self.mask2d.bool()
        neg = torch.finfo(dtype).min
        # Prefill: causal over the prompt, pad keys masked, each pad query attends to itself.
        eye = torch.eye(width, dtype=torch.bool, device=device)
        allowed = torch.tril(torch.ones(width, width, dtype=torch.bool, device=device))[None] & real[:, None, :]
        allowed = allowed | eye[None]
        prefill = torch.full((rows, 1, width, total), neg, dtype=dtype, device=device)
        prefill[:, 0, :, :width].masked_fill_(allowed, 0.0)
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        cache = StaticCache(config=self.model.config, max_cache_len=total)
        logits = self.model(input_ids=self.ids, attention_mask=prefill, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        del prefill
        # Step state, all on the device and updated in place (a captured graph replays it).
        self.out = torch.full((rows, self.max_new), self.pad, dtype=torch.long, device=device)
        self.limit = torch.tensor([r.max_new_tokens for r in self.reqs], dtype=torch.long, device=device)
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.attend = torch.full((rows, 1, 1, total), neg, dtype=dtype, device=device)
        self.attend[:, 0, 0, :width].masked_fill_(real, 0.0)
        self.position = positions[:, -1:].clone()
        self.token = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.cache, self.width = cache, width
        self._emit(logits)  # step 0: the first new token
        graph = None
        cuda = device.type == "cuda"
        for n in range(1, self.max_new):
            if n % self.CHECK_EVERY == 0 and self._finished(n):
                break
            if graph is not None:
                graph.replay()
            elif n == 1 and cuda:  # the documented warm-up before a capture: a real step, on a side stream
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    self._advance()
                torch.cuda.current_stream(device).wait_stream(side)
            elif n == 2 and cuda:  # record the step once (recording runs nothing), then replay it
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._advance()
                graph.replay()
            else:
                self._advance()
            if on_step is not None:
                on_step(n + 1, self.max_new)
        if on_step is not None and self.max_new == 1:
            on_step(1, 1)
        return self.out

    def _emit(self, logits: torch.Tensor) -> None:
        """Record the next token of every row (pad for finished rows) at `step`, then advance it."""
        token = self.sampler(logits, self.step)
        token = torch.where(self.done, self.pad, token)
        self.out.index_copy_(1, self.step.view(1), token[:, None])
        self.done |= (token == self.eos) | (self.step + 1 >= self.limit)
        self.token.copy_(token[:, None])
        self.step += 1

    def _advance(self) -> None:
        """One decoding step: feed each row's last token at the next cache position."""
        self.attend.index_fill_(3, (self.step + self.width - 1).view(1), 0.0)
        self.position += 1
        logits = self.model(input_ids=self.token, attention_mask=self.attend, position_ids=self.position,
                            past_key_values=self.cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        self._emit(logits)

    def _finished(self, n: int) -> bool:
        """Every row at its end (waits for the device once). With stop strings, rows whose text so
        far holds one are marked finished first."""
        if self.stops:
            done = self.done.tolist()
            texts = self.tokenizer.batch_decode(self.out[:, :n].tolist(), skip_special_tokens=True)
            hit = [d or any(s in t for s in self.stops) for d, t in zip(done, texts)]
            if hit != done:
                self.done.copy_(torch.tensor(hit, device=self.device))
            return all(hit)
        return bool(self.done.all())

    def _hf_generate(self, on_step) -> torch.Tensor:
        """transformers' generate with the same sampling rule (a logits processor), for models
        that `static_decoding` excludes."""
        sampler, width = self.sampler, self.ids.shape[1]

        def process(input_ids, scores):
            step = input_ids.shape[1] - width
            if on_step is not None:
                on_step(step + 1, self.max_new)
            picked = sampler(scores, step)
            return torch.full_like(scores, float("-inf")).scatter_(1, picked[:, None], 0.0)

        kwargs = dict(max_new_tokens=self.max_new, do_sample=False, temperature=None, top_p=None, top_k=None,
                      pad_token_id=self.pad, eos_token_id=self.eos, logits_processor=[process])
        if self.stops:
            kwargs.update(stop_strings=list(self.stops), tokenizer=self.tokenizer)
        new = self.model.generate(input_ids=self.ids, attention_mask=self.mask2d, **kwargs)[:, width:]
        if new.shape[1] < self.max_new:
            new = torch.cat([new, new.new_full((new.shape[0], self.max_new - new.shape[1]), self.pad)], 1)
        return new


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
