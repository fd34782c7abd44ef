"""The inner loop's training half: K edits trained together, each exactly as it would be alone.

Each edit (`EditJob`) keeps its own semantics: its sequences in its own seeded order (a
`random.Random(seed)` shuffled every epoch, as SEAL's trainer shuffles), its own batch size,
gradient accumulation, epochs, learning rate and schedule, gradient clipping and initialisation
seed. At global micro-step t every edit that still has work contributes its t-th micro-batch as one
group of rows (routed to its adapter slot, engine/lora.py); an edit that has finished contributes
nothing and its adapter and optimizer state stop changing. The loss is the sum over edits of each
edit's own mean token loss (divided by its accumulation steps), so no gradient mixes between edits,
and AdamW is elementwise, so one optimizer over the stacked adapters (`BatchedAdamW`, per-slot
step counts, learning rates and masks) is K independent optimizers.

Padding is masked out of the loss through the attention mask, never by comparing ids with the pad
id (pad may equal EOS, and the real EOS closing each sequence stays in the loss). Logits are
computed only at target positions, so padding costs no vocabulary projection.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import TrainSettings
from .lora import AdapterBank, Routing, to_device

# What one more forward/backward pass costs, in padded tokens: on a GPU a pass of a ~135M model is
# ~25k kernel launches (~0.2 s of host time on an H200 host, measured), about what 65k tokens of
# compute cost; on a CPU a pass costs little beyond its tokens.
GPU_PASS_TOKENS = 65536
CPU_PASS_TOKENS = 64

Text = str | tuple  # a plain string (loss on every token) or (prompt, completion[, loss_on_prompt])


# Attention kernels for training passes (group_losses): flash, memory-efficient, or plain math.
_TRAIN_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class TrainingError(RuntimeError):
    """An edit that cannot be trained (no sequences, a non-finite loss); recorded per edit."""


@dataclass
class EditJob:
    """One adapter to train: its texts, its settings and its seed (init and data order)."""
    texts: list
    settings: TrainSettings
    seed: int


@dataclass
class TrainStats:
    n_sequences: int = 0
    steps: int = 0
    tokens: int = 0                 # target tokens trained on, summed over epochs
    padded_tokens: int = 0          # tokens pushed through the model for this edit, pads included
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0            # training wall time attributed to this edit (train_queue: by pass cost)
    slot_seconds: float = 0.0       # wall time from taking its slot to being handed back finished
    passes: int = 0                 # forward/backward passes it took part in
    batch_seconds: float = 0.0      # wall time of the training call up to this edit's hand-back
    batch_edits: int = 1            # edits in the same training call (queue)
    error: str | None = None        # set when the edit failed (its adapter is then meaningless)

    def to_dict(self) -> dict:
        return asdict(self)


def encode(tokenizer, texts: list, max_length: int) -> list[tuple[list[int], int]]:
    """Token ids (+ a closing EOS) and how many leading tokens are context, not targets.

    A plain string is all target (SEAL's knowledge edits). A (prompt, completion) pair trains on
    the completion only (policy SFT, output-token TTT); (prompt, completion, True) on both. Prompt
    and completion are tokenised separately, so the boundary matches what generation sees.
    """
    eos = tokenizer.eos_token_id
    out = []
    for text in texts:
        if isinstance(text, (tuple, list)):
            prompt_ids = tokenizer(text[0], add_special_tokens=True)["input_ids"]
            target_ids = tokenizer(text[1], add_special_tokens=False)["input_ids"]
            ids = (prompt_ids + target_ids)[: max_length - 1]
            n_context = 0 if (len(text) > 2 and text[2]) else min(len(prompt_ids), len(ids))
        else:
            ids = tokenizer(text, add_special_tokens=True)["input_ids"][: max_length - 1]
            n_context = 0
        out.append((ids + [eos], n_context))
    return out


@dataclass
class _Micro:
    indices: list[int]   # which of the edit's sequences
    epoch: int
    step_after: bool     # an optimizer step follows this micro-batch
    step: int            # index of the optimizer step this micro-batch belongs to


def schedule(n_sequences: int, s: TrainSettings, seed: int) -> tuple[list[_Micro], int]:
    """The edit's micro-batches in order, and its total optimizer steps."""
    rng = random.Random(seed)
    per_epoch = math.ceil(n_sequences / s.batch_size)
    total = math.ceil(per_epoch / s.grad_accum_steps) * s.epochs
    out, step = [], 0
    for epoch in range(s.epochs):
        order = list(range(n_sequences))
        rng.shuffle(order)
        for b in range(per_epoch):
            last = b == per_epoch - 1
            after = (b + 1) % s.grad_accum_steps == 0 or last
            out.append(_Micro(order[b * s.batch_size:(b + 1) * s.batch_size], epoch, after, step))
            step += after
    return out, total


def lr_factor(kind: str, warmup: int, total: int, step: int) -> float:
    """Multiplier of the learning rate at optimizer step `step` (0-based) of `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class BatchedAdamW:
    """torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, decoupled weight decay) for every slot of
    the bank at once: state tensors have the parameters' (slots, n) shape, step counts are per
    slot, and `step` updates only the slots asked for (their gradients are then zeroed)."""

    def __init__(self, flat: list[tuple[torch.Tensor, torch.Tensor]], betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p, _ in flat]
        self.grads = [g for _, g in flat]
        self.betas, self.eps = betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.t = torch.zeros(self.params[0].shape[0], dtype=torch.float64, device=self.params[0].device)

    @torch.no_grad()
    def reset(self, slot: int) -> None:
        """Forget `slot`'s state (moments, step count, accumulated gradient): a new edit takes it."""
        for m, v, g in zip(self.exp_avg, self.exp_avg_sq, self.grads):
            m[slot] = 0
            v[slot] = 0
            g[slot] = 0
        self.t[slot] = 0

    @torch.no_grad()
    def step(self, slots: list[int], lr: list[float], weight_decay: list[float],
             max_norm: list[float] | None = None) -> None:
        """Update `slots` (host list, ascending) with their learning rates, weight decays and
        optional gradient-norm limits (host lists, one per slot). The arithmetic is torch's
        single-tensor AdamW, per slot; other slots are left untouched (parameters, moments, step
        counts and accumulated gradients). A few runs of consecutive slots are updated in place
        through views; scattered slots (a queue's slots after reuse) are gathered, updated and
        scattered back in chunks, a fixed number of kernels whatever the scatter. Nothing here
        waits for the GPU."""
        runs, start = [], 0
        for end in range(1, len(slots) + 1):
            if end == len(slots) or slots[end] != slots[end - 1] + 1:
                runs.append((start, end))
                start = end
        if len(runs) <= self.MAX_RUNS:
            for start, end in runs:
                part = slice(start, end)
                self._step_rows(slice(slots[start], slots[end - 1] + 1), lr[part], weight_decay[part],
                                max_norm[part] if max_norm else None)
            return
        for start in range(0, len(slots), self.CHUNK):
            part = slice(start, start + self.CHUNK)
            self._step_rows(to_device(slots[part], torch.long, self.t.device), lr[part], weight_decay[part],
                            max_norm[part] if max_norm else None)

    MAX_RUNS = 3     # more runs of consecutive slots than this: gather instead of one update per run
    CHUNK = 32       # slots gathered at once (temporaries: 4 x CHUNK x one flat buffer's row)

    def _step_rows(self, rows, lr: list[float], weight_decay: list[float], max_norm) -> None:
        """One AdamW update of `rows`: a slice (updated in place through views) or a device index
        tensor (gathered, updated, written back)."""
        b1, b2 = self.betas
        device = self.params[0].device
        gather = isinstance(rows, torch.Tensor)
        take = (lambda x: x.index_select(0, rows)) if gather else (lambda x: x[rows])
        grads = [take(g) for g in self.grads]
        if max_norm is not None:  # torch.nn.utils.clip_grad_norm_, per slot
            norm = torch.sqrt(sum((g.double() ** 2).sum(1) for g in grads))
            coef = torch.clamp(to_device(max_norm, torch.float64, device) / (norm + 1e-6), max=1.0)
            grads = [g * coef.to(g.dtype)[:, None] for g in grads]
        if gather:
            self.t.index_add_(0, rows, torch.ones_like(rows, dtype=self.t.dtype))
        else:
            self.t[rows] += 1
        t = take(self.t)
        dtype = grads[0].dtype
        lr_t = to_device(lr, torch.float64, device)
        step_size = (lr_t / (1 - b1 ** t)).to(dtype)[:, None]
        bc2_sqrt = torch.sqrt(1 - b2 ** t).to(dtype)[:, None]
        decay = (1 - lr_t * to_device(weight_decay, torch.float64, device)).to(dtype)[:, None]
        for p, g, m, v, full_grad in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, self.grads):
            ps, ms, vs = take(p), take(m), take(v)
            if any(weight_decay):
                ps.mul_(decay)
            ms.lerp_(g, 1 - b1)
            vs.mul_(b2).addcmul_(g, g, value=1 - b2)
            # p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps), with one temporary of p's size
            denom = vs.sqrt().div_(bc2_sqrt).add_(self.eps).div_(step_size)
            ps.addcdiv_(ms, denom, value=-1.0)
            del denom
            if gather:
                p.index_copy_(0, rows, ps)
                m.index_copy_(0, rows, ms)
                v.index_copy_(0, rows, vs)
                full_grad.index_fill_(0, rows, 0)
            else:
                full_grad[rows] = 0


def _lm_parts(model):
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return body, model.get_output_embeddings(), getattr(model.config, "final_logit_softcapping", None)


@dataclass
class _Batch:
    """One forward pass: padded rows, and where the targets are (all computed on the host)."""
    input_ids: torch.Tensor      # (rows, width), right-padded
    positions: torch.Tensor      # flat indices into (rows, width - 1) of the positions that predict a target
    group_of: torch.Tensor       # the group of each target
    count: torch.Tensor          # targets per group, at least 1 (the loss's denominator)
    counts: list[int]            # targets per group
    rows_per_group: int


def _predicting(ids: list[int], n_context: int) -> range:
    """Positions of a row that predict a target: the token at p (a target) is predicted at p - 1;
    the first token and the `n_context` context tokens are never targets."""
    return range(max(n_context, 1) - 1, len(ids) - 1)


def _rows(groups: list[list[tuple[list[int], int]]], pad_id: int, device) -> _Batch:
    """Pad groups of (ids, n_context) to equal row counts and one width (right padding); an
    empty group becomes filler rows with no targets."""
    m = max(len(g) for g in groups)
    rows = [seq for g in groups for seq in g + [([pad_id], 1)] * (m - len(g))]  # filler: no targets
    width = max(len(ids) for ids, _ in rows)
    input_ids = [ids + [pad_id] * (width - len(ids)) for ids, _ in rows]
    positions, group_of, counts = [], [], [0] * len(groups)
    for i, (ids, n_context) in enumerate(rows):
        predicting = _predicting(ids, n_context)
        positions.extend(i * (width - 1) + p for p in predicting)
        group_of.extend([i // m] * len(predicting))
        counts[i // m] += len(predicting)
    return _Batch(to_device(input_ids, torch.long, device), to_device(positions, torch.long, device),
                  to_device(group_of, torch.long, device), to_device([max(c, 1) for c in counts], torch.float32, device),
                  counts, m)


def group_losses(model, batch: _Batch) -> torch.Tensor:
    """Mean next-token loss per row group (groups are contiguous equal-size row blocks), (groups,).
    Logits are computed at target positions only, and nothing here waits for the GPU."""
    body, head, softcap = _lm_parts(model)
    # Rows are right-padded, so the causal mask alone keeps every target's context exact (padding
    # only ever follows a row's tokens) and no padding mask is passed: transformers then builds none
    # (its mask checks wait for the GPU) and attention runs as one causal kernel. cuDNN attention is
    # left out: it plans per shape, ~1.5 ms of host time a layer at every new width (H200 profile).
    # No KV cache in training (transformers builds one by default: cache updates per layer).
    with sdpa_kernel(_TRAIN_ATTENTION):
        hidden = body(input_ids=batch.input_ids, use_cache=False).last_hidden_state
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, batch.positions)
    logits = head(h).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    targets = batch.input_ids[:, 1:].reshape(-1).index_select(0, batch.positions)
    token_loss = F.cross_entropy(logits, targets, reduction="none")
    n = len(batch.counts)
    total = torch.zeros(n, device=h.device, dtype=token_loss.dtype).index_add_(0, batch.group_of, token_loss)
    return total / batch.count


def buckets(widths: list[int], rows_per_group: int, overhead: int, max_buckets: int = 4,
            max_tokens: int = 1 << 62) -> list[list[int]]:
    """Split groups (by index) into at most `max_buckets` forward passes, each padded to its own
    widest row, minimising padded tokens + `overhead` tokens per pass (the cost of one more pass:
    small on a CPU, a kernel-launch budget on a GPU). A pass over `max_tokens` padded tokens (the
    memory plan) costs its excess a million times over, so it is split while a split is allowed
    and a group alone fits. Returns lists of group indices."""
    order = sorted(range(len(widths)), key=lambda g: widths[g])

    def cost(part):
        padded = rows_per_group * len(part) * widths[part[-1]]
        return overhead + padded + max(0, padded - max_tokens) * 1e6  # over the cap: split it

    def split(part, budget):
        if budget <= 1 or len(part) < 2:
            return [part]
        best, at = cost(part), None
        for i in range(1, len(part)):
            c = cost(part[:i]) + cost(part[i:])
            if c < best:
                best, at = c, i
        if at is None:
            return [part]
        left = split(part[:at], budget - 1)
        return left + split(part[at:], budget - len(left))

    # Inside a pass groups keep their original (slot) order: all slots in order need no gather.
    return [sorted(part) for part in split(order, max_buckets)]


def step_passes(widths: list[int], rows_per_group: int, overhead: int, max_tokens: int = 1 << 62) -> list[list[int]]:
    """The passes of one global step (`buckets`), as many as the memory plan (`max_tokens` padded
    tokens a pass) needs: a K=256 step of teacher notes is ~50k padded tokens, and four passes
    would each be over a plan of ~8k. The dry run (sealbench/estimate.py) plans with this too."""
    needed = -(-rows_per_group * sum(widths) // max_tokens)
    return buckets(widths, rows_per_group, overhead, max_buckets=max(4, 2 * needed), max_tokens=max_tokens)


def train_edits(bank: AdapterBank, tokenizer, jobs: list[EditJob], slots: list[int] | None = None,
                progress=None, pass_overhead: int | None = None) -> list[TrainStats]:
    """Reset `slots` (default 0..len(jobs)-1) with each job's seed and train them together: job j
    in slots[j], every adapter left in its slot afterwards (continual merges them, episodes answer
    through them).

    Returns one TrainStats per job, in order; an edit that fails (no sequences, a non-finite loss)
    has `error` set, the others go on. The special case of `train_queue` with one slot per job and
    one flush at the end. Raises ValueError for a bad slot list.
    """
    slots = list(range(len(jobs))) if slots is None else list(slots)
    if len(slots) != len(jobs):
        raise ValueError(f"need one slot per edit, got {len(slots)} slots for {len(jobs)} edits")
    stats: list[TrainStats | None] = [None] * len(jobs)
    for finished in train_queue(bank, tokenizer, jobs, slots, flush_at=len(jobs), longest_first=False,
                                progress=progress, pass_overhead=pass_overhead):
        for j, _, st in finished:
            stats[j] = st
    return stats


@dataclass
class QueueMeter:
    """What one `train_queue` call did, for benchmarks: global steps, forward/backward passes, the
    sum over steps of live slots (occupancy = live_slot_steps / (steps * slots)), target and padded
    tokens, flushes and training wall seconds (answering between flushes excluded)."""
    slots: int = 0
    steps: int = 0
    passes: int = 0
    static_passes: int = 0  # of which static (CUDA-graphed on a GPU)
    live_slot_steps: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    flushes: int = 0
    seconds: float = 0.0
    static_tokens: int = 0   # the bank's memory plan: largest static and eager pass (padded tokens)
    eager_tokens: int = 0
    memory_splits: int = 0   # passes that ran out of device memory and were run again in parts

    @property
    def occupancy(self) -> float:
        return self.live_slot_steps / max(1, self.steps * self.slots)


@dataclass
class _Live:
    """An edit holding a slot: its plan and where it is in it."""
    job: int
    slot: int
    at: int = 0             # its next micro-batch
    admitted: float = 0.0   # host clock when it took the slot


def train_queue(bank: AdapterBank, tokenizer, jobs: list[EditJob], slots: list[int] | None = None,
                flush_at: int | None = None, longest_first: bool = True, progress=None,
                pass_overhead: int | None = None, meter: QueueMeter | None = None, static: bool | None = None):
    """Train a queue of edits through the bank's slots, keeping every slot busy (continuous
    batching of fine-tunes). A generator: it yields lists of (job index, slot, TrainStats) for
    edits that have finished; until the caller asks for the next list, each yielded edit's adapter
    sits in its slot (answer through it, merge it); then those slots are reset (adapter from the
    next edit's seed, optimizer state zeroed) and given to queued edits.

    Every edit keeps its own semantics whatever shares its steps (its seeded order, batch size,
    accumulation, epochs, lr schedule, clipping, init seed): at each global step every live edit
    contributes its next micro-batch, one group of rows in its slot, exactly as in `train_edits`.
    `slots`: the slots to use (default all of the bank's). `longest_first`: start the edits with the
    most micro-batches first (the tail of a queue is then short edits); else jobs take slots in
    order, so with one slot per job, job j trains in slots[j]. Edits are yielded in groups of
    `flush_at` (default K/4; K/2 once the queue is empty) or when none is left training: each
    flush waits for the device once and lets the caller answer many edits in one generation. An edit that cannot train (no sequences) takes a slot, gets a fresh
    adapter and is handed back failed. `progress(done, total)` counts micro-batches over all edits. `meter` (a QueueMeter) is filled in as the queue runs.

    Time per edit (`TrainStats.seconds`) is attributed, not the batch's: the training wall time
    between two flushes is split over that interval's passes by their cost (`pass_overhead` +
    padded tokens), a pass's share equally over its edits (their rows are padded alike).
    `slot_seconds` is the wall time from taking the slot to being yielded.

    `static`: passes of at most 16,384 padded tokens take the static shape (`StaticPass`, CUDA-graphed) on
    CUDA by default (None), always (True: its CPU form, for tests) or never (False).
    """
    slots = list(range(bank.n_slots)) if slots is None else list(slots)
    if not slots or len(set(slots)) != len(slots) or any(not 0 <= s < bank.n_slots for s in slots):
        raise ValueError(f"need distinct slots in 0..{bank.n_slots - 1}, got {slots}")
    device = bank.device
    if pass_overhead is None:
        pass_overhead = GPU_PASS_TOKENS if str(device).startswith("cuda") else CPU_PASS_TOKENS
    # Activations grow with padded tokens: passes are kept under a share of the device's memory.
    flush_at = max(1, flush_at or len(slots) // 4)
    meter = meter if meter is not None else QueueMeter()
    meter.slots = len(slots)
    stats = [TrainStats(batch_edits=len(jobs)) for _ in jobs]
    seqs, plans, totals = [], [], []
    for j, job in enumerate(jobs):
        encoded = encode(tokenizer, job.texts, job.settings.max_length) if job.texts else []
        seqs.append(encoded)
        stats[j].n_sequences = len(encoded)
        plan, total = schedule(len(encoded), job.settings, job.seed) if encoded else ([], 0)
        plans.append(plan)
        totals.append(total)
        if not encoded:
            stats[j].error = "nothing to train on: the edit produced no training sequences"
    queue = list(range(len(jobs)))
    if longest_first:
        queue.sort(key=lambda j: -len(plans[j]))  # stable: ties keep the caller's order
    queue.reverse()  # popped from the end
    n_micro, done_micro = sum(len(p) for p in plans), 0
    rank = {slot: i for i, slot in enumerate(slots)}
    free = sorted(slots, key=rank.get, reverse=True)  # popped from the end: slots in the order given
    optimizer = BatchedAdamW(bank.flat)
    _memory_plan(bank)  # once the optimizer's moments are allocated
    meter.static_tokens, meter.eager_tokens = bank.static_tokens, bank.eager_tokens
    bank.zero_grad()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    live: dict[int, _Live] = {}
    finished: list[_Live] = []
    log: list[tuple] = []   # per pass: (members as (job, micro), losses on the device, targets, padded per member, cost)
    tally = _Tally(stats, plans)
    origin = time.perf_counter()
    try:
        _sync(device)
        interval = time.perf_counter()
        while queue or live or finished:
            while free and queue:
                j = queue.pop()
                slot = free.pop()
                bank.reset(slot, jobs[j].seed)
                optimizer.reset(slot)
                entry = _Live(j, slot, admitted=time.perf_counter())
                if plans[j]:
                    live[slot] = entry
                else:  # nothing to train: handed back (failed, with a fresh adapter) at the next flush
                    finished.append(entry)
            if live:
                members = [live[s] for s in sorted(live)]
                micros = [plans[e.job][e.at] for e in members]
                groups = [[seqs[e.job][i] for i in m.indices] for e, m in zip(members, micros)]
                m = max(len(g) for g in groups)
                widths = [max(len(ids) for ids, _ in g) for g in groups]
                pending = step_passes(widths, m, pass_overhead, bank.eager_tokens)
                while pending:
                    part = pending.pop(0)
                    passing = [(members[g].slot, groups[g], jobs[members[g].job].settings.grad_accum_steps)
                               for g in part]
                    try:
                        fixed = _static_pass(bank, passing, pad, static, bank.static_tokens)
                        out = fixed(passing) if fixed is not None else _forward_backward(bank, passing, pad)
                    except torch.OutOfMemoryError:
                        if len(part) < 2:
                            raise
                        # The memory plan is an estimate: shrink it below this pass, and run the
                        # pass again in parts (nothing of it reached the fp32 gradients).
                        _shrink_plan(bank, m * len(part) * max(widths[g] for g in part))
                        meter.memory_splits += 1
                        sub = step_passes([widths[g] for g in part], m, pass_overhead, bank.eager_tokens)
                        if len(sub) < 2:  # at least halve it
                            sub = [list(range(len(part) // 2)), list(range(len(part) // 2, len(part)))]
                        pending[:0] = [[part[i] for i in s] for s in sub]
                        continue
                    losses, counts, padded, pass_tokens = out
                    meter.static_passes += fixed is not None
                    log.append(([(members[g].job, members[g].at) for g in part], losses, counts, padded,
                                pass_overhead + pass_tokens))
                    meter.passes += 1
                    meter.padded_tokens += pass_tokens
                due = [(e, mc) for e, mc in zip(members, micros) if mc.step_after]
                if due:
                    s = [jobs[e.job].settings for e, _ in due]
                    optimizer.step([e.slot for e, _ in due],
                                   [x.learning_rate * lr_factor(x.lr_schedule, x.warmup_steps, totals[e.job], mc.step)
                                    for x, (e, mc) in zip(s, due)],
                                   [x.weight_decay for x in s],
                                   [x.max_grad_norm or float("inf") for x in s] if any(x.max_grad_norm for x in s) else None)
                meter.steps += 1
                meter.live_slot_steps += len(members)
                done_micro += len(members)
                for e in members:
                    e.at += 1
                    if e.at == len(plans[e.job]):
                        finished.append(live.pop(e.slot))
                if progress:
                    progress(done_micro, n_micro)
            # Hand back when enough slots wait to be reused; once the queue is empty no slot is
            # waited for, so the tail is handed back in fewer, larger groups (fewer generations).
            if finished and (not live or len(finished) >= (flush_at if queue else max(flush_at, len(slots) // 2))):
                _sync(device)
                now = time.perf_counter()
                meter.seconds += now - interval
                meter.tokens += tally.add(log, now - interval)
                log = []
                # An edit whose loss turned non-finite is over: it leaves its slot now.
                for slot in [s for s, e in live.items() if stats[e.job].error]:
                    finished.append(live.pop(slot))
                out = sorted(finished, key=lambda e: e.slot)
                finished = []
                for e in out:
                    st = stats[e.job]
                    st.slot_seconds, st.batch_seconds = now - e.admitted, now - origin
                meter.flushes += 1
                yield [(e.job, e.slot, stats[e.job]) for e in out]
                free.extend(e.slot for e in out)
                free.sort(key=rank.get, reverse=True)
                interval = time.perf_counter()
    finally:
        bank.zero_grad()


class _Tally:
    """Per-edit losses, steps and token counts from the training log, one device transfer per
    flush; an edit whose loss turned non-finite is failed from that micro-batch on."""

    def __init__(self, stats: list[TrainStats], plans: list[list[_Micro]]):
        self.stats, self.plans = stats, plans
        self.epoch: dict[int, list[float]] = {}

    def add(self, log: list[tuple], seconds: float) -> int:
        """Record `log`'s passes, splitting `seconds` of wall time over them by cost; returns the
        target tokens recorded."""
        if not log:
            return 0
        values = torch.cat([entry[1] for entry in log]).float().cpu().tolist()
        total_cost = sum(entry[4] for entry in log)
        at, tokens = 0, 0
        for members, _, counts, padded, cost in log:
            share = seconds * cost / total_cost / len(members)
            for (j, t), count, value in zip(members, counts, values[at:at + len(members)]):
                st, micro = self.stats[j], self.plans[j][t]
                st.seconds += share
                st.passes += 1
                if st.error is None and not math.isfinite(value):
                    st.error = (f"loss became {value} at step {st.steps} (epoch {micro.epoch}); "
                                "lower the learning rate or check the training texts")
                if st.error is not None:
                    continue
                if math.isnan(st.first_loss):
                    st.first_loss = value
                st.last_loss = value
                st.tokens += count
                tokens += count
                st.padded_tokens += padded
                self.epoch.setdefault(j, []).append(value)
                st.steps += micro.step_after
                if t + 1 == len(self.plans[j]) or self.plans[j][t + 1].epoch != micro.epoch:
                    st.epoch_losses.append(sum(self.epoch[j]) / len(self.epoch[j]))
                    self.epoch[j] = []
            at += len(members)
        return tokens


def _forward_backward(bank, members: list[tuple[int, list, int]], pad) -> tuple:
    """One forward/backward over members' micro-batches, each (slot, rows, grad_accum_steps):
    (their losses on the device, target tokens per member, padded tokens per member, padded
    tokens of the whole pass, filler rows included). A
    non-finite loss is kept out of the summed loss; the gradient of a sum reaches each slot from
    its own rows only, so other edits are untouched."""
    layout = [slot for slot, _, _ in members]
    rows = [g for _, g, _ in members]
    if 8 * (bank.n_slots - len(members)) <= bank.n_slots and len(members) < bank.n_slots:
        # Nearly every slot is here: give the others an empty filler group, so every slot sits in
        # order and the adapters are used as they are (no gather). A filler group is padded to the
        # pass's rows and width like any other, so this is kept to passes of at most 1/8 fillers:
        # with half the bank as fillers an eager pass doubled in size and ran out of memory on the
        # H200 at K=256 (2026-12-02).
        by_slot = dict(zip(layout, rows))
        layout = list(range(bank.n_slots))
        rows = [by_slot.get(slot, []) for slot in layout]
    batch = _rows(rows, pad, bank.device)
    routing = Routing(layout, batch.rows_per_group, bank.n_slots, bank.device, compact=True)
    with torch.enable_grad():  # callers may sit inside torch.no_grad()
        with bank.route(routing):
            losses = group_losses(bank.model, batch)
        counts = batch.counts
        if len(layout) != len(members):  # keep the members' losses, in their order
            index = [layout.index(slot) for slot, _, _ in members]
            losses = losses.index_select(0, to_device(index, torch.long, losses.device))
            counts = [counts[i] for i in index]
        accum = to_device([float(a) for _, _, a in members], losses.dtype, losses.device)
        with warnings.catch_warnings():  # gradients are strided views on purpose (engine/lora.py)
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            finite = torch.isfinite(losses)
            (torch.where(finite, losses, torch.zeros_like(losses)) / accum).sum().backward()
    bank.collect_gradients(routing)
    return losses.detach(), counts, batch.rows_per_group * batch.input_ids.shape[1], batch.input_ids.numel()


# ------------------------------------------------------------------ static (captured) passes
# A pass costs ~0.2 s of host time on an H200 (~5,500 kernel launches) whatever its size, while the
# device needs ~25 ms for 16k tokens of this model: every pass of at most 16,384 padded tokens (at
# SEAL's batch 1, a full bank of 128 short notes as well as the tail of a queue, where the longest
# edit's chain of passes bounds a queue however well its slots are packed) therefore takes a static
# shape (groups padded to 1, 4, 16, 32, 64, 128 or 256, widths to 64, 128 or 512 tokens), runs the
# same kernels every time and, on CUDA, is captured once per shape in a CUDA graph and replayed
# (torch.cuda.graphs). The graphs share one memory pool; the largest holds ~30 GB (activations,
# and logits at every position).
STATIC_GROUPS = (1, 4, 16, 32, 64, 128, 256)
STATIC_WIDTHS = (64, 128, 512)
STATIC_TOKENS = 16384


def static_shape(groups: list[list[tuple[list[int], int]]], max_tokens: int = STATIC_TOKENS) -> tuple[int, int, int] | None:
    """(groups, rows per group, width) of the static pass of at most `max_tokens` padded tokens
    that holds `groups`, or None."""
    m = max(len(g) for g in groups)
    width = max(len(ids) for g in groups for ids, _ in g)
    n = next((x for x in STATIC_GROUPS if x >= len(groups)), None)
    w = next((x for x in STATIC_WIDTHS if x >= width), None)
    if n is None or w is None or n * m * w > max_tokens:
        return None
    return n, m, w


class StaticPass:
    """One training pass (forward, backward, gradient collection) of a fixed shape: `groups`
    groups of `rows` rows, `width` tokens. Inputs are copied into fixed buffers; a group's loss is
    its targets' summed token loss times 1 / targets (0 for filler groups, which then add exact
    zeros to some slot's gradient). The numbers are those of `group_losses` (logits at every
    position, weighted by a target mask, instead of at target positions only). With `capture`
    (CUDA) the pass is recorded once in a CUDA graph, after a warm-up with zero weights, and replayed."""

    def __init__(self, bank: AdapterBank, shape: tuple[int, int, int], pad: int, capture: bool, pool=None):
        n, m, w = shape
        device = bank.device
        self.bank, self.shape, self.pad = bank, shape, pad
        self.input_ids = torch.full((n * m, w), pad, dtype=torch.long, device=device)
        self.mask = torch.zeros(n * m, w - 1, device=device)
        self.inv_count = torch.zeros(n, device=device)
        self.inv_accum = torch.zeros(n, device=device)
        self.slots = torch.zeros(n, dtype=torch.long, device=device)
        self.routing = Routing.fixed(self.slots, m)
        self.graph = None
        if capture:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                self._run()  # zero weights: a warm-up that leaves every gradient as it was
            torch.cuda.current_stream(device).wait_stream(side)
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()  # blocks freed on the side stream serve only that stream
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self.losses = self._run()

    def _run(self) -> torch.Tensor:
        n, m, w = self.shape
        body, head, softcap = _lm_parts(self.bank.model)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            with self.bank.route(self.routing), sdpa_kernel(_TRAIN_ATTENTION):
                hidden = body(input_ids=self.input_ids, use_cache=False).last_hidden_state
            logits = head(hidden[:, :-1]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.input_ids[:, 1:].reshape(-1),
                                         reduction="none")
            sums = (token_loss * self.mask.reshape(-1)).reshape(n, m * (w - 1)).sum(1)
            losses = sums * self.inv_count
            finite = torch.isfinite(losses)
            (torch.where(finite, losses, torch.zeros_like(losses)) * self.inv_accum).sum().backward()
        self.bank.collect_gradients(self.routing)
        return losses.detach()

    def __call__(self, members: list[tuple[int, list, int]]) -> tuple:
        """Like `_forward_backward`, for members that fit this shape."""
        n, m, w = self.shape
        ids = [[self.pad] * w for _ in range(n * m)]
        mask = [[0.0] * (w - 1) for _ in range(n * m)]
        counts = []
        for g, (_, rows, _) in enumerate(members):
            count = 0
            for i, (seq, n_context) in enumerate(rows):
                r = g * m + i
                ids[r][:len(seq)] = seq
                predicting = _predicting(seq, n_context)
                for p in predicting:
                    mask[r][p] = 1.0
                count += len(predicting)
            counts.append(count)
        fill = members[0][0]
        device = self.bank.device
        self.input_ids.copy_(to_device(ids, torch.long, device), non_blocking=True)
        self.mask.copy_(to_device(mask, torch.float32, device), non_blocking=True)
        self.inv_count.copy_(to_device([1.0 / max(c, 1) for c in counts] + [0.0] * (n - len(members)),
                                       torch.float32, device), non_blocking=True)
        self.inv_accum.copy_(to_device([1.0 / a for _, _, a in members] + [0.0] * (n - len(members)),
                                       torch.float32, device), non_blocking=True)
        self.slots.copy_(to_device([s for s, _, _ in members] + [fill] * (n - len(members)), torch.long, device),
                         non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
            losses = self.losses[:len(members)].clone()
        else:
            losses = self._run()[:len(members)]
        return losses, counts, m * w, n * m * w


def _static_pass(bank: AdapterBank, members: list, pad: int, static: bool | None, max_tokens: int = STATIC_TOKENS):
    """The StaticPass for `members` (cached on the bank per shape), or None for an eager pass:
    static passes are used on CUDA by default, or wherever `static` is True (tests on a CPU)."""
    cuda = str(bank.device).startswith("cuda")
    if not (static if static is not None else cuda) or any(h is not None for h in bank.history):
        return None  # a graph would not see continual's history factors (they are replaced per edit)
    shape = static_shape([rows for _, rows, _ in members], max_tokens)
    if shape is None:
        return None
    if shape not in bank.static_passes:
        if cuda and bank.graph_pool is None:
            bank.graph_pool = torch.cuda.graph_pool_handle()
        bank.static_passes[shape] = StaticPass(bank, shape, pad, capture=cuda, pool=bank.graph_pool)
    return bank.static_passes[shape]


def _token_bytes(bank: AdapterBank) -> int:
    """Device memory a training pass holds per padded token: ~40 kB of saved activations a layer
    (bf16) and ~14 bytes a vocabulary entry (the logits in bf16 and fp32, the log-softmax and the
    gradient). For SmolLM2-135M that is 1.89 MB; measured on the H200, the 16,384-token static
    pass's graph held 30.7 GB (1.87 MB a token)."""
    layers = max(1, len(bank.shapes) // len(bank.lora.targets))
    vocab = bank.model.get_output_embeddings().weight.shape[0]
    return 40_000 * layers + 14 * vocab


def _memory_plan(bank: AdapterBank) -> tuple[int, int]:
    """(largest static pass, largest eager pass) in padded tokens, from the memory free once the
    bank and the optimizer are allocated: the static passes' shared pool may take a sixth of it
    (at most STATIC_TOKENS), an eager pass a third of what is left; the rest is headroom (the
    allocator's fragmentation was ~14 GB on the H200, and answering decodes beside the bank).
    Decided once per bank (graphs, once captured, hold their pool); a pass that still runs out of
    memory lowers it (`_shrink_plan`). Unbounded on a CPU."""
    if bank.static_tokens is None:
        if str(bank.device).startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(bank.device)
            per_token = _token_bytes(bank)
            static = min(STATIC_TOKENS, int(free / 6 / per_token))
            static = max((x for x in _static_sizes() if x <= static), default=0)
            bank.static_tokens = static
            # An eager pass held ~1.7x the estimate (a 16k-token pass beside a 53 GB bank and a
            # 17.6 GB pool ran out of the H200's 140 GB), so it is sized by the measured cost.
            bank.eager_tokens = max(4096, int((free - static * per_token) / 3 / (1.7 * per_token)))
        else:
            bank.static_tokens, bank.eager_tokens = STATIC_TOKENS, 1 << 62
    return bank.static_tokens, bank.eager_tokens


def _shrink_plan(bank: AdapterBank, tokens: int) -> None:
    """After a pass of `tokens` padded tokens ran out of device memory: no pass of that size again
    (static or eager), the compute copy's partial gradients dropped, the allocator's cache freed."""
    bank.eager_tokens = max(1, min(bank.eager_tokens, tokens // 2))
    bank.static_tokens = min(bank.static_tokens, max((x for x in _static_sizes() if x < tokens), default=0))
    bank.copy.a_grad.zero_()
    bank.copy.b_grad.zero_()
    torch.cuda.empty_cache()


def _static_sizes() -> set[int]:
    """Padded tokens of every static shape at one row per group."""
    return {n * w for n in STATIC_GROUPS for w in STATIC_WIDTHS}


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
