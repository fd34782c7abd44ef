"""The inner loop as one object: a loaded model with K adapter slots; train edits, answer, repeat.

    engine = Engine(loaded, LoRASettings(), n_slots=None)    # K from free memory (CUDA) or 8 (CPU)
    stats = engine.train([EditJob(texts, TrainSettings(), seed), ...])   # slots 0..n-1
    for finished in engine.train_queue(jobs):   # any number of edits; slots reused as edits finish
        ...answer through each (job, slot, stats) before asking for the next group
    answers = engine.generate([GenRequest(prompt, slot=0), GenRequest(prompt, slot=None), ...])

Every caller (the protocols, the RL reward, ARC's test-time training, the lm-eval model type) goes
through this, so an edit means the same procedure everywhere (engine/train.py, engine/generate.py).
"""
from __future__ import annotations

import resource

import torch

from ..config import LoRASettings
from .generate import GenRequest, generate
from .lora import AdapterBank
from .models import LoadedModel
from .train import EditJob, QueueMeter, TrainStats, train_edits, train_queue

CPU_SLOTS = 8           # measured on the 2-core CPU: K=8 trains ~2x faster per edit than K=1
MAX_SLOTS = 256
ROW_BYTES = 300 << 20   # activation budget per trained row (a ~400-token sequence of a ~135M model)


def slots_for_memory(model: torch.nn.Module, lora: LoRASettings, device: str) -> int:
    """How many edits fit at once: 8 on a CPU; on CUDA, 60% of free memory over the per-slot cost
    (fp32 adapter + gradient + two AdamW moments, 16 bytes per parameter, the compute copy and its
    gradient in the model's dtype, plus `ROW_BYTES` of activations), rounded down to a power of two, between 1 and `MAX_SLOTS`."""
    if not str(device).startswith("cuda"):
        return CPU_SLOTS
    per_slot = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.targets:
            per_slot += lora.r * (module.in_features + module.out_features)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    compute = 2 * next(model.parameters()).element_size()
    k = int(0.6 * free / ((16 + compute) * per_slot + ROW_BYTES))
    return max(1, min(MAX_SLOTS, 1 << max(0, k.bit_length() - 1)))


class Hooks:
    """Progress callbacks a caller sets while it works (runner.py; integrations/lm_eval.py):
    `generated(n)` after each generation batch with the requests it finished, `decoded(step,
    total)` after each of its decoding steps, `trained(done, total)` after each global training
    step with micro-batches done of the queue's total. None: nothing is called. They change no
    numbers."""
    generated = None
    decoded = None
    trained = None


class Engine:
    """A model with an adapter bank of `n_slots` (default `slots_for_memory`). One engine per
    model at a time: `close()` (or a `with` block) puts the model's modules back."""

    def __init__(self, loaded: LoadedModel, lora: LoRASettings, n_slots: int | None = None,
                 gen_batch_size: int | None = None):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.lora = lora
        # Rows per generation batch: a GPU decodes a thousand rows as fast as a few.
        self.gen_batch_size = gen_batch_size or (1024 if str(loaded.device).startswith("cuda") else 32)
        previous = getattr(loaded, "_engine", None)
        if previous is not None:  # a model carries one bank: the newest engine replaces the old
            previous.close()
        self.bank = AdapterBank(loaded.model, n_slots or slots_for_memory(loaded.model, lora, loaded.device), lora)
        self.meter = QueueMeter()  # what every train_queue call of this engine did, summed (benchmarks, RL stats)
        loaded._engine = self

    @property
    def k(self) -> int:
        return self.bank.n_slots

    def train(self, jobs: list[EditJob], progress=None) -> list[TrainStats]:
        """Train `jobs` in slots 0..len(jobs)-1 (at most `k`); see engine/train.py."""
        if len(jobs) > self.k:
            raise ValueError(f"{len(jobs)} edits do not fit {self.k} adapter slots; batch them")
        return train_edits(self.bank, self.tokenizer, jobs, progress=progress) if jobs else []

    def train_queue(self, jobs: list[EditJob], flush_at: int | None = None, meter: QueueMeter | None = None,
                    static: bool | None = None):
        """Train any number of edits through the K slots, reusing a slot as soon as its edit is
        answered: yields lists of (job index, slot, TrainStats); see engine/train.py `train_queue`.
        `meter` defaults to the engine's own running total."""
        if not jobs:
            return iter(())
        return train_queue(self.bank, self.tokenizer, jobs, flush_at=flush_at,
                           meter=self.meter if meter is None else meter, static=static,
                           progress=lambda done, total: Hooks.trained and Hooks.trained(done, total))

    def generate(self, requests: list[GenRequest], stop_strings: list[str] | None = None,
                 add_special_tokens: bool = False) -> list[str]:
        """Completions through each request's slot (None: the base model); see engine/generate.py."""
        return generate(self.loaded.model, self.tokenizer, requests, self.bank, self.gen_batch_size,
                        stop_strings, add_special_tokens, progress=Hooks.generated,
                        on_step=Hooks.decoded)

    def close(self) -> None:
        if self.bank is not None:
            self.bank.remove()
            self.bank = None
            if getattr(self.loaded, "_engine", None) is self:
                self.loaded._engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_prompt(tokenizer, text: str, style: str = "auto") -> str:
    """Wrap a prompt for the model: `chat` uses the tokenizer's chat template, `plain` leaves it
    raw, `auto` picks chat when the tokenizer has a template. Raises ValueError for other styles."""
    style = resolve_style(tokenizer, style)
    if style == "plain":
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def resolve_style(tokenizer, style: str) -> str:
    if style == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if style not in ("plain", "chat"):
        raise ValueError(f"unknown prompt style {style!r}; use auto, chat or plain")
    return style


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process so far: the CUDA allocator's peak on a GPU, max RSS on a CPU."""
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
