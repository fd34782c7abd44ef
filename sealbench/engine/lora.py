"""K independent LoRA adapters on one frozen model, each batch row routed to its own adapter.

SEAL trains one LoRA adapter per self-edit. At this model size a GPU step is all kernel launches,
so the engine trains and answers for many edits at once: every target projection carries `n_slots`
adapters stacked as tensors (A: slots x d_in x r, B: slots x r x d_out), and a batch is laid out as
G groups of m rows, group g routed to slot `slots[g]`. The adapter's contribution is two batched
matmuls, `(x_g @ A[slot_g]) @ B[slot_g] * alpha / r`, so nothing mixes between slots: a row's
output, and every gradient that reaches slot s, depends only on the rows routed to s.

Storage: the fp32 master adapters are two flat buffers (slots x ΣA, slots x ΣB) with flat
gradient buffers, so resets, the optimizer and per-edit gradient norms (engine/train.py) cost a few
kernels for the whole model. The forward pass computes with a copy in the model's dtype whose
per-layer factors are leaf parameters viewing the copy's flat buffer, their gradients views into
its flat gradient buffer (autograd accumulates into an existing .grad in place; slicing one big
parameter per layer instead would make every layer's backward materialise a full-size zero
gradient). A training pass gathers its own slots into the copy's first rows (Routing.compact).
Rows routed to no slot (None) see the frozen base model: their adapter delta is multiplied by
exact zeros, so base-model and adapted answers share one generation batch.

`fold_into_history` serves the continual protocol: it appends each slot's current factors to a
frozen per-slot low-rank history (the slot's merged edits so far) and resets the adapters, which is
SEAL's "merge the adapter into the weights" kept per slot, so S sequences of merged edits train
side by side. `merge_into_base` folds one slot into the base weights for good (the RL policy SFT).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from ..config import LoRASettings


class Routing:
    """Rows of a batch as `len(slots)` contiguous groups of `rows_per_group` rows; group g uses
    adapter slot `slots[g]`, or the frozen base model where `slots[g]` is None. A batch whose
    groups differ in size is routed one row per group.

    `compact` (training): the groups' adapters are gathered once per pass into the first
    `len(slots)` rows of the bank's compute copy, and group g computes with row g, so a pass costs
    memory traffic and kernels in proportion to its own slots, not to the bank's (a pass of one
    live row in a bank of 256 would otherwise copy and collect all 256 adapters). Otherwise
    (answering) the whole bank is copied once per generation and each layer picks its groups'."""

    def __init__(self, slots: list[int | None], rows_per_group: int, n_slots: int, device,
                 compact: bool = False):
        if compact and any(s is None for s in slots):
            raise ValueError("a compact (training) routing has no base-model groups")
        self.rows_per_group = rows_per_group
        self.n_groups = len(slots)
        self.compact = compact
        # Slots 0..G-1 in order, one group each: the stacked tensors are used as they are (no gather).
        self.identity = list(slots) == list(range(len(slots))) and len(slots) == n_slots
        self.prefix = list(slots) == list(range(len(slots)))
        # Built on the host and copied without waiting for the GPU (a plain copy would synchronise).
        self.slots = None if self.prefix else to_device([0 if s is None else s for s in slots], torch.long, device)
        # Base-model groups run through slot 0 with their delta multiplied by exact zero.
        self.keep = (to_device([s is not None for s in slots], torch.bool, device)[:, None, None]
                     if any(s is None for s in slots) else None)

    @classmethod
    def fixed(cls, slots: torch.Tensor, rows_per_group: int) -> "Routing":
        """Routing through a device tensor of slots (one per group) that the caller rewrites in
        place between passes: the same kernels whatever the slots (a captured training pass)."""
        route = cls.__new__(cls)
        route.rows_per_group, route.n_groups = rows_per_group, slots.shape[0]
        route.identity = route.prefix = False
        route.slots, route.keep, route.compact = slots, None, True
        return route

    def pick(self, stacked: torch.Tensor) -> torch.Tensor:
        """The groups' slices of a (n_slots, ...) tensor, as cheaply as the layout allows."""
        if self.identity:
            return stacked
        if self.prefix:
            return stacked[:self.n_groups]
        return stacked.index_select(0, self.slots)

    @classmethod
    def for_rows(cls, row_slots: list[int | None], n_slots: int, device) -> "Routing":
        """Routing for rows given one slot each; contiguous equal-size runs become groups."""
        runs = [1]
        for a, b in zip(row_slots, row_slots[1:]):
            if a == b:
                runs[-1] += 1
            else:
                runs.append(1)
        m = runs[0]
        if row_slots and all(r == m for r in runs):
            return cls(row_slots[::m], m, n_slots, device)
        return cls(row_slots, 1, n_slots, device)


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus the bank's adapters for it (a view into the bank's flat params)."""

    def __init__(self, base: nn.Linear, bank: "AdapterBank", index: int):
        super().__init__()
        self.base = base
        self.index = index
        self._bank = [bank]  # a list, so the bank is not registered as a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        bank = self._bank[0]
        route = bank.routing
        if route is None:
            return y
        *lead, d_in = x.shape
        n_rows = x.shape[0]
        per_row = x.numel() // (n_rows * d_in)            # tokens per row
        xs = x.reshape(route.n_groups, route.rows_per_group * per_row, d_in)
        # (slots, d_in, r), (slots, r, d_out) in the model's dtype: the fp32 master adapters' copy
        # for this pass (mixed precision; see AdapterBank.route).
        a, b = bank.compute_factors(self.index)
        if not route.compact:  # compact: row g of the compute copy already holds group g's adapter
            a, b = route.pick(a), route.pick(b)
        delta = torch.bmm(torch.bmm(xs, a), b)
        hist = bank.history[self.index]
        if hist is not None:
            delta = delta + torch.bmm(torch.bmm(xs, route.pick(hist[0]).to(x.dtype)), route.pick(hist[1]).to(x.dtype))
        if route.keep is not None:
            delta = delta * route.keep
        return y.add(delta.reshape(*lead, -1), alpha=bank.scale)  # one fused kernel


class AdapterBank:
    """`n_slots` trainable LoRA adapters on the target projections of a causal LM. Installing
    wraps the target `nn.Linear` modules in place; `remove()` restores them.

    Shapes: `A` is (n_slots, ΣA) and `B` (n_slots, ΣB), float32 by default whatever the
    model's dtype (as PEFT keeps adapters of a bf16 model in fp32). Raises ValueError if the model
    has none of the target modules.
    """

    def __init__(self, model: nn.Module, n_slots: int, lora: LoRASettings, dtype=torch.float32):
        if n_slots < 1:
            raise ValueError(f"an adapter bank needs at least one slot, got {n_slots}")
        self.model, self.n_slots, self.lora, self.dtype = model, n_slots, lora, dtype
        self.scale = lora.alpha / lora.r
        self.routing: Routing | None = None
        device = next(model.parameters()).device
        self.device = device
        targets = [(name, module) for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in lora.targets]
        if not targets:
            raise ValueError(f"the model has none of the LoRA target modules {list(lora.targets)}")
        self.shapes: list[tuple[int, int]] = [(m.in_features, m.out_features) for _, m in targets]
        r = lora.r
        self.a_offsets = _offsets([d_in * r for d_in, _ in self.shapes])
        self.b_offsets = _offsets([r * d_out for _, d_out in self.shapes])
        rows = n_slots
        self.A = torch.zeros(rows, self.a_offsets[-1], device=device, dtype=dtype)
        self.B = torch.zeros(rows, self.b_offsets[-1], device=device, dtype=dtype)
        self.A_grad, self.B_grad = torch.zeros_like(self.A), torch.zeros_like(self.B)
        self._a_params, self._b_params = self._leaves(self.A, self.B)
        # The model computes with a copy of the adapters in its own dtype (mixed precision, as PEFT
        # runs fp32 adapters under a bf16 model), made once per pass (`route`) and whose gradients are
        # added to the fp32 ones once per pass (`collect_gradients`): two kernels for the whole model
        # instead of a cast (and a cast back in backward) per layer; the numbers are those of casting
        # per layer. A model in the adapters' dtype gets a copy too: training passes gather their
        # slots into it (Routing.compact).
        self.compute_dtype = next(model.parameters()).dtype
        self.copy = _ComputeCopy(self.A.to(self.compute_dtype, copy=True), self.B.to(self.compute_dtype, copy=True))
        # PEFT's init of A: kaiming_uniform(a=sqrt(5)) on (r, d_in) = U(-1/sqrt(d_in), 1/sqrt(d_in)).
        self._a_bound = torch.cat([torch.full((d_in * r,), 1.0 / math.sqrt(d_in), dtype=dtype)
                                   for d_in, _ in self.shapes]).to(device)
        self.history: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(targets)
        # Training passes of a static shape (engine/train.py StaticPass), one per shape, and the
        # CUDA graph memory pool they share: they point at this bank's tensors, so they live with it.
        self.static_passes: dict = {}
        self.graph_pool = None
        self.static_tokens: int | None = None  # the largest static and eager passes this bank's
        self.eager_tokens: int | None = None   # memory allows (engine/train.py _memory_plan)
        self._installed: list[tuple[nn.Module, str, nn.Linear]] = []
        for i, (name, module) in enumerate(targets):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, LoRALinear(module, self, i))
            self._installed.append((parent, attr, module))
        for p in model.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------------ parameters
    @property
    def flat(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(values, gradients) flat buffers, each (n_slots, n): what the optimizer updates."""
        return [(self.A, self.A_grad), (self.B, self.B_grad)]

    def _leaves(self, a_flat, b_flat, a_grad=None, b_grad=None) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Per-layer leaf parameters viewing flat (rows, ΣA) / (rows, ΣB) buffers, with .grad
        views into flat gradient buffers where given (autograd accumulates into them in place)."""
        a_params, b_params, rows, r = [], [], a_flat.shape[0], self.lora.r
        for i, (d_in, d_out) in enumerate(self.shapes):
            for flat, grad, offsets, shape, out in ((a_flat, a_grad, self.a_offsets, (rows, d_in, r), a_params),
                                                    (b_flat, b_grad, self.b_offsets, (rows, r, d_out), b_params)):
                param = nn.Parameter(flat[:, offsets[i]:offsets[i + 1]].view(shape), requires_grad=grad is not None)
                if grad is not None:
                    param.grad = grad[:, offsets[i]:offsets[i + 1]].view(shape)
                out.append(param)
        return a_params, b_params

    def factors(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s fp32 master (A, B): (n_slots, d_in, r) and (n_slots, r, d_out) views."""
        return self._a_params[index], self._b_params[index]

    def compute_factors(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s (A, B) in the model's dtype, for a forward pass inside `route`: the
        compact pass's first `n_groups` rows (Routing.compact), else all n_slots rows."""
        route = self.routing
        rows = route.n_groups if route is not None and route.compact else self.n_slots
        leaves = self.copy.leaves.get(rows)
        if leaves is None:
            c = self.copy
            leaves = c.leaves[rows] = self._leaves(c.a[:rows], c.b[:rows], c.a_grad[:rows], c.b_grad[:rows])
        return leaves[0][index], leaves[1][index]

    def collect_gradients(self, routing: Routing) -> None:
        """After a backward pass through `routing`: add the compute copy's gradients into the fp32
        gradients of the slots they belong to, and zero them."""
        c = self.copy
        rows = routing.n_groups if routing.compact else self.n_slots
        for grad, part in ((self.A_grad, c.a_grad[:rows]), (self.B_grad, c.b_grad[:rows])):
            if not routing.compact or routing.identity:
                grad.add_(part)
            elif routing.prefix:
                grad[:rows].add_(part)
            else:  # a slot may appear twice (a static pass's filler groups add exact zeros)
                grad.index_add_(0, routing.slots, part.to(grad.dtype))
            part.zero_()

    def zero_grad(self) -> None:
        self.A_grad.zero_()
        self.B_grad.zero_()
        self.copy.a_grad.zero_()
        self.copy.b_grad.zero_()

    @torch.no_grad()
    def reset(self, slot: int, seed: int) -> None:
        """A fresh adapter in `slot`: A drawn from a generator seeded with `seed` alone (so the
        draw does not depend on the slot or on what else is in the batch), B = 0."""
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"slot {slot} out of range 0..{self.n_slots - 1}")
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        draw = torch.rand(self.A.shape[1], generator=gen, device=self.device, dtype=self.dtype)
        self.A[slot] = (draw * 2 - 1) * self._a_bound
        self.B[slot] = 0

    @torch.no_grad()
    def slot_state(self, slot: int) -> dict[str, torch.Tensor]:
        return {"A": self.A[slot].detach().clone(), "B": self.B[slot].detach().clone()}

    @torch.no_grad()
    def load_slot_state(self, slot: int, state: dict[str, torch.Tensor]) -> None:
        self.A[slot] = state["A"].to(self.A)
        self.B[slot] = state["B"].to(self.B)

    # ------------------------------------------------------------------ routing
    @contextmanager
    def route(self, routing: Routing | None):
        """Run the model with rows routed to slots inside this block (None: the base model)."""
        previous, self.routing = self.routing, routing
        if routing is not None:
            c = self.copy
            with torch.no_grad():
                if not routing.compact or routing.identity:
                    c.a.copy_(self.A)
                    c.b.copy_(self.B)
                elif routing.prefix:
                    c.a[:routing.n_groups].copy_(self.A[:routing.n_groups])
                    c.b[:routing.n_groups].copy_(self.B[:routing.n_groups])
                else:
                    c.a[:routing.n_groups].copy_(self.A.index_select(0, routing.slots))
                    c.b[:routing.n_groups].copy_(self.B.index_select(0, routing.slots))
        try:
            yield
        finally:
            self.routing = previous

    def routing_for(self, row_slots: list[int | None]) -> Routing:
        return Routing.for_rows(row_slots, self.n_slots, self.device)

    # ------------------------------------------------------------------ merging
    @torch.no_grad()
    def fold_into_history(self) -> None:
        """Append every slot's current adapter to its frozen history, then zero B (continual)."""
        for i in range(len(self.shapes)):
            a, b = self.factors(i)
            a, b = a.detach().clone(), b.detach().clone()
            old = self.history[i]
            self.history[i] = (a, b) if old is None else (torch.cat([old[0], a], 2), torch.cat([old[1], b], 1))
        self.B.zero_()

    def clear_history(self) -> None:
        self.history = [None] * len(self.shapes)

    @torch.no_grad()
    def merge_into_base(self, slot: int) -> None:
        """Add slot's adapter to the frozen base weights for good (W += scale * (A B)^T)."""
        for i, (parent, attr, _) in enumerate(self._installed):
            a, b = self.factors(i)
            weight = getattr(parent, attr).base.weight
            weight += (self.scale * (a[slot] @ b[slot])).T.to(weight.dtype)

    def remove(self) -> None:
        """Put the original modules back; the bank is unusable afterwards."""
        for parent, attr, module in self._installed:
            setattr(parent, attr, module)
        self._installed = []


class _ComputeCopy:
    """The adapters in the model's dtype (flat buffers of the bank's shape), their gradients, and
    per-layer leaf views of their first `rows` rows (`leaves[rows]`, made on first use)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b
        self.a_grad, self.b_grad = torch.zeros_like(a), torch.zeros_like(b)
        self.leaves: dict[int, tuple[list[nn.Parameter], list[nn.Parameter]]] = {}


def to_device(values: list, dtype, device) -> torch.Tensor:
    """A small host list on the device without waiting for the GPU (pinned, non-blocking)."""
    t = torch.tensor(values, dtype=dtype)
    if str(device).startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t


def _offsets(sizes: list[int]) -> list[int]:
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return out
