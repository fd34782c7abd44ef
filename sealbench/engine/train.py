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

from ..config import TrainSettings
from .lora import AdapterBank, Routing

Text = str | tuple  # a plain string (loss on every token) or (prompt, completion[, loss_on_prompt])


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
    seconds: float = 0.0            # this edit's share of the batch's wall time
    batch_seconds: float = 0.0      # wall time of the whole batch
    batch_edits: int = 1            # edits trained together with this one
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
    def step(self, stepping: torch.Tensor, lr: torch.Tensor, weight_decay: torch.Tensor,
             max_norm: torch.Tensor | None = None) -> None:
        """Update slots where `stepping` (bool, (slots,)); lr / weight_decay / max_norm are (slots,).

        The arithmetic is torch's single-tensor AdamW, per slot; other slots are left untouched
        (parameters, moments, step counts and accumulated gradients)."""
        idx = stepping.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        b1, b2 = self.betas
        n = int(idx[-1]) + 1
        # A prefix of slots (the usual case: slots 0..K-1 all step) is updated through views in
        # place; any other set through a gather and a scatter.
        rows = slice(0, n) if n == idx.numel() else idx
        grads = [g[rows] for g in self.grads]
        if max_norm is not None:  # torch.nn.utils.clip_grad_norm_, per slot
            norm = torch.sqrt(sum((g.double() ** 2).sum(1) for g in grads))
            coef = torch.clamp(max_norm[rows].double() / (norm + 1e-6), max=1.0).to(grads[0].dtype)
            grads = [g * coef[:, None] for g in grads]
        self.t[rows] += 1
        t = self.t[rows]
        dtype = grads[0].dtype
        step_size = (lr[rows].double() / (1 - b1 ** t)).to(dtype)[:, None]
        bc2_sqrt = torch.sqrt(1 - b2 ** t).to(dtype)[:, None]
        decay = (1 - lr[rows].double() * weight_decay[rows].double()).to(dtype)[:, None]
        for p, g, m, v, full_grad in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, self.grads):
            ps, ms, vs = p[rows], m[rows], v[rows]
            ps.mul_(decay)
            ms.lerp_(g, 1 - b1)
            vs.mul_(b2).addcmul_(g, g, value=1 - b2)
            ps.sub_(ms / (vs.sqrt() / bc2_sqrt).add_(self.eps) * step_size)
            if isinstance(rows, torch.Tensor):  # gathered copies: write them back
                p.index_copy_(0, rows, ps)
                m.index_copy_(0, rows, ms)
                v.index_copy_(0, rows, vs)
            full_grad[rows] = 0


def _lm_parts(model):
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return body, model.get_output_embeddings(), getattr(model.config, "final_logit_softcapping", None)


def _rows(groups: list[list[tuple[list[int], int]]], pad_id: int, device):
    """Pad groups of (ids, n_context) to equal row counts and one width (right padding)."""
    m = max(len(g) for g in groups)
    rows = [seq for g in groups for seq in g + [([pad_id], 1)] * (m - len(g))]  # filler: no targets
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (ids, n_context) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention[i, :len(ids)] = 1
        targets[i, max(n_context, 1):len(ids)] = True  # a token is a target if it is predicted
    return input_ids.to(device), attention.to(device), targets.to(device), m


def group_losses(model, input_ids, attention, targets, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss per row group (groups are contiguous equal-size row blocks) and the
    number of target tokens per group. Logits are computed at target positions only."""
    body, head, softcap = _lm_parts(model)
    hidden = body(input_ids=input_ids, attention_mask=attention).last_hidden_state
    mask = targets[:, 1:]
    h = hidden[:, :-1][mask]
    logits = head(h).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    token_loss = F.cross_entropy(logits, input_ids[:, 1:][mask], reduction="none")
    rows_per_group = input_ids.shape[0] // n_groups
    row = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(mask)[mask]
    group = row // rows_per_group
    total = torch.zeros(n_groups, device=h.device, dtype=token_loss.dtype).index_add_(0, group, token_loss)
    count = torch.bincount(group, minlength=n_groups)
    return total / count.clamp(min=1), count


def buckets(widths: list[int], rows_per_group: int, overhead: int, max_buckets: int = 4) -> list[list[int]]:
    """Split groups (by index) into at most `max_buckets` forward passes, each padded to its own
    widest row, minimising padded tokens + `overhead` tokens per pass (the cost of one more pass:
    small on a CPU, a kernel-launch budget on a GPU). Returns lists of group indices."""
    order = sorted(range(len(widths)), key=lambda g: widths[g])

    def cost(part):
        return overhead + rows_per_group * len(part) * widths[part[-1]]

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

    return split(order, max_buckets)


def train_edits(bank: AdapterBank, tokenizer, jobs: list[EditJob], slots: list[int] | None = None,
                progress=None, pass_overhead: int | None = None) -> list[TrainStats]:
    """Reset `slots` (default 0..len(jobs)-1) with each job's seed and train them together.

    Returns one TrainStats per job, in order; an edit that fails (no sequences, a non-finite loss)
    has `error` set and stops training, the others go on. `progress(done, total)` is called after
    every global micro-step. `pass_overhead` (tokens; default 64 on a CPU, 8192 on a GPU) prices
    one more forward pass when a step's rows are split by length (`buckets`). Base weights are
    never changed.
    """
    slots = list(range(len(jobs))) if slots is None else list(slots)
    if len(slots) != len(jobs) or len(set(slots)) != len(slots) or any(not 0 <= s < bank.n_slots for s in slots):
        raise ValueError(f"need one distinct slot in 0..{bank.n_slots - 1} per edit, got {slots}")
    model, device = bank.model, bank.device
    if pass_overhead is None:
        pass_overhead = 8192 if str(device).startswith("cuda") else 64
    stats = [TrainStats() for _ in jobs]
    plans: list[list[_Micro]] = []
    totals: list[int] = []
    seqs: list[list] = []
    for j, job in enumerate(jobs):
        bank.reset(slots[j], job.seed)
        encoded = encode(tokenizer, job.texts, job.settings.max_length) if job.texts else []
        seqs.append(encoded)
        stats[j].n_sequences = len(encoded)
        plan, total = schedule(len(encoded), job.settings, job.seed) if encoded else ([], 0)
        plans.append(plan)
        totals.append(total)
        if not encoded:
            stats[j].error = "nothing to train on: the edit produced no training sequences"
    optimizer = BatchedAdamW(bank.flat)
    bank.zero_grad()
    epoch_sums = [[0.0, 0] for _ in jobs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n_micro = max((len(p) for p in plans), default=0)
    _sync(device)
    start = time.perf_counter()
    grad_mode = torch.is_grad_enabled()
    torch.set_grad_enabled(True)  # callers may sit inside torch.no_grad()
    try:
        for t in range(n_micro):
            active = [j for j in range(len(jobs)) if t < len(plans[j]) and stats[j].error is None]
            if not active:
                break
            micros = {j: plans[j][t] for j in active}
            groups = {j: [seqs[j][i] for i in micros[j].indices] for j in active}
            m = max(len(g) for g in groups.values())
            widths = [max(len(ids) for ids, _ in groups[j]) for j in active]
            values: dict[int, tuple[float, int, int]] = {}
            for part in buckets(widths, m, pass_overhead):
                members = [active[g] for g in part]
                values.update(_forward_backward(bank, jobs, slots, members, groups, pad))
            _step(bank, optimizer, jobs, slots, stats, plans, totals, micros, values, epoch_sums, t)
            if progress:
                progress(t + 1, n_micro)
    finally:
        torch.set_grad_enabled(grad_mode)
        bank.zero_grad()
    _sync(device)
    seconds = time.perf_counter() - start
    for st in stats:
        st.batch_seconds, st.batch_edits, st.seconds = seconds, len(jobs), seconds / max(len(jobs), 1)
    return stats


def _forward_backward(bank, jobs, slots, members, groups, pad) -> dict[int, tuple[float, int, int]]:
    """One forward/backward over `members`' micro-batches; per edit (loss, targets, padded tokens).
    A non-finite loss is kept out of the backward pass and its slot's gradients are zeroed."""
    input_ids, attention, targets, m = _rows([groups[j] for j in members], pad, bank.device)
    routing = Routing([slots[j] for j in members], m, bank.n_slots, bank.device)
    with bank.route(routing):
        losses, counts = group_losses(bank.model, input_ids, attention, targets, len(members))
    finite = torch.isfinite(losses.detach())
    accum = torch.tensor([float(jobs[j].settings.grad_accum_steps) for j in members], device=bank.device)
    with warnings.catch_warnings():  # gradients are strided views on purpose (engine/lora.py)
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
        (torch.where(finite, losses, torch.zeros_like(losses)) / accum).sum().backward()
    out = {}
    for g, (j, value, count) in enumerate(zip(members, losses.detach().tolist(), counts.tolist())):
        if not math.isfinite(value):
            bank.A_grad[slots[j]] = 0  # its gradients may hold NaN; the edit never steps again
            bank.B_grad[slots[j]] = 0
        out[j] = (value, count, m * input_ids.shape[1])
    return out


def _step(bank, optimizer, jobs, slots, stats, plans, totals, micros, values, epoch_sums, t) -> None:
    """Record each edit's micro-batch loss; one optimizer step for the edits whose step is due."""
    n, device = bank.n_slots, bank.device
    stepping = torch.zeros(n, dtype=torch.bool, device=device)
    lr = torch.zeros(n, dtype=torch.float32, device=device)
    decay = torch.zeros(n, dtype=torch.float32, device=device)
    max_norm = torch.full((n,), float("inf"), device=device)
    clip = False
    for j, (value, count, padded) in values.items():
        st, micro, s = stats[j], micros[j], jobs[j].settings
        if not math.isfinite(value):
            st.error = (f"loss became {value} at step {st.steps} (epoch {micro.epoch}); "
                        "lower the learning rate or check the training texts")
            continue
        if math.isnan(st.first_loss):
            st.first_loss = value
        st.last_loss = value
        st.tokens += count
        st.padded_tokens += padded
        epoch_sums[j][0] += value
        epoch_sums[j][1] += 1
        if micro.step_after:
            slot = slots[j]
            stepping[slot] = True
            lr[slot] = s.learning_rate * lr_factor(s.lr_schedule, s.warmup_steps, totals[j], micro.step)
            decay[slot] = s.weight_decay
            if s.max_grad_norm:
                max_norm[slot] = s.max_grad_norm
                clip = True
            st.steps += 1
        if t + 1 == len(plans[j]) or plans[j][t + 1].epoch != micro.epoch:
            st.epoch_losses.append(epoch_sums[j][0] / max(epoch_sums[j][1], 1))
            epoch_sums[j] = [0.0, 0]
    optimizer.step(stepping, lr, decay, max_norm if clip else None)


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
