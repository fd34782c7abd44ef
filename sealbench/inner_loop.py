"""The inner loop: train a LoRA adapter on a list of texts, answer with it, reset.

This is the engine every contender and the RL loop spend their time in, so it is built for speed
without changing SEAL's optimisation semantics (docs/DESIGN.md §5):

* The model is wrapped with a LoRA adapter once. A new edit *resets* the adapter in memory (fresh
  seeded A, zero B, fresh optimiser); the frozen base weights are never touched, so there is no
  model reload and no disk round trip between edits.
* SEAL pads every sequence to 2048 tokens at batch size 1. Padding is masked out of the loss, so it
  changes nothing but the cost: we keep batch size 1 semantics by default and simply do not pad.
  With ``batch_size > 1`` sequences are padded only to the longest in their batch (dynamic padding)
  and the loss is the mean over real tokens (the attention mask decides what is real, because the
  pad token may equal EOS).
* Answers are generated in batches with left padding, greedy, stopping at EOS. On CUDA, decoding
  runs on merged adapter weights with a static KV cache and a compiled, CUDA-graphed decode step:
  at batch sizes this small a decode step is all kernel-launch overhead (see `generation_mode`).

Only torch, transformers and peft are imported here (the engine must run on the GPU box).
"""
from __future__ import annotations

import logging
import math
import os
import random
import resource
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import torch

from .models import LoadedModel

log = logging.getLogger(__name__)

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainingError(RuntimeError):
    """Training went wrong in a way the item should record (e.g. a NaN loss)."""


@dataclass
class LoRAConfig:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_LINEAR


@dataclass
class TrainConfig:
    learning_rate: float = 1e-3
    epochs: int = 10
    batch_size: int = 1            # SEAL semantics; >1 = dynamic padding, mean loss over real tokens
    grad_accum_steps: int = 1      # optimizer step every N batches (SEAL's CPT: batch 4 x 2)
    max_length: int = 2048         # longer sequences are truncated (SEAL's padding length)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0
    max_grad_norm: float | None = None


@dataclass
class TrainStats:
    n_sequences: int = 0
    steps: int = 0
    tokens: int = 0                 # target tokens trained on (no pads, no prompt), summed over epochs
    padded_tokens: int = 0          # tokens actually pushed through the model, pads included
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process so far: CUDA allocator peak on GPU, max RSS on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class InnerLoop:
    """One model with one resettable LoRA adapter.

    Typical use::

        loop = InnerLoop(loaded)
        loop.reset(seed=0)
        stats = loop.train(["Title\\nsome fact", ...], TrainConfig())
        answers = loop.generate(prompts)            # with the adapter
        with loop.base_model():                     # adapter switched off
            answers = loop.generate(prompts)
    """

    def __init__(self, loaded: LoadedModel, lora: LoRAConfig | None = None, generation: str | None = None):
        from peft import LoraConfig, get_peft_model

        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.lora = lora or LoRAConfig()
        self.generation_mode = generation_mode(self.device, generation)
        peft_config = LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha,
                                 lora_dropout=self.lora.dropout,
                                 target_modules=list(self.lora.target_modules), bias="none",
                                 task_type="CAUSAL_LM")
        # One LoRA wrapper per loaded model: a second InnerLoop on the same weights reuses it
        # (same config) or unwraps it first, so adapters never nest.
        previous = getattr(loaded, "_peft", None)
        if previous is not None and previous[0] == self.lora:
            self.model = previous[1]
        else:
            base = previous[1].unload() if previous is not None else loaded.model
            self.model = get_peft_model(base, peft_config)
            loaded._peft = (self.lora, self.model)
        self.model.eval()
        self._lora_layers = [m for m in self.model.modules()
                             if hasattr(m, "reset_lora_parameters") and "default" in getattr(m, "lora_A", {})]
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ adapter state
    @torch.no_grad()
    def reset(self, seed: int) -> None:
        """Fresh adapter: A re-drawn from a seeded RNG (PEFT's init), B zero => adapter is a no-op."""
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        for layer in self._lora_layers:
            layer.reset_lora_parameters("default", True)
        torch.random.set_rng_state(gen_state)

    @contextmanager
    def base_model(self):
        """Run the frozen base model (adapter switched off) inside this block."""
        with self.model.disable_adapter():
            yield

    def _adapter_disabled(self) -> bool:
        return bool(self._lora_layers) and self._lora_layers[0].disable_adapters

    def merged_adapter(self):
        """Generate with the adapter folded into the weights, then restore the exact base bits.

        On a GPU a LoRA forward pass is launch-bound (the adapter adds ~2 small matmuls and dtype
        casts per projection), so generation runs ~2x faster on merged weights. The base weights
        are copied back afterwards (not un-merged by subtraction, which would not be bit-exact).
        """
        @contextmanager
        def merged():
            saved = []
            with torch.no_grad():
                for layer in self._lora_layers:
                    weight = layer.get_base_layer().weight
                    saved.append((weight, weight.detach().clone()))
                    weight += layer.get_delta_weight("default").to(weight.dtype)
            try:
                with self.model.disable_adapter():
                    yield
            finally:
                with torch.no_grad():
                    for weight, original in saved:
                        weight.copy_(original)
        return merged()

    def fast_generation(self, merge_adapter: bool | None = None):
        """Context for generating: merged adapter weights on CUDA (see `merged_adapter`), else as is.

        Callers that drive `self.model.generate` themselves (ARC grids) use it like `generate` does."""
        if merge_adapter is None:
            merge_adapter = self.device.startswith("cuda")
        if merge_adapter and not self._adapter_disabled():
            return self.merged_adapter()
        return nullcontext()

    @torch.no_grad()
    def merge_into_base(self) -> None:
        """Fold the current adapter into the base weights (continual-learning protocol), then reset it."""
        for layer in self._lora_layers:
            layer.merge(adapter_names=["default"])
            layer.merged_adapters = []  # the weights now *are* the base; keep the adapter unmerged-able
        for layer in self._lora_layers:
            layer.lora_B["default"].weight.zero_()

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    # ------------------------------------------------------------------ training
    def _encode(self, texts: list, max_length: int) -> list[tuple[list[int], int]]:
        """Token ids (+ closing EOS) and how many leading tokens are context, not targets.

        A plain string is all target (SEAL's knowledge edits: loss on all tokens). A
        (prompt, completion) pair trains on the completion only (policy SFT, output-token TTT);
        (prompt, completion, True) trains on both. Prompt and completion are tokenised separately,
        so the boundary tokens match what the model sees when it generates the completion.
        """
        eos = self.tokenizer.eos_token_id
        out = []
        for text in texts:
            if isinstance(text, (tuple, list)):
                prompt_ids = self.tokenizer(text[0], add_special_tokens=True)["input_ids"]
                target_ids = self.tokenizer(text[1], add_special_tokens=False)["input_ids"]
                ids = (prompt_ids + target_ids)[: max_length - 1]
                loss_on_prompt = len(text) > 2 and bool(text[2])
                n_context = 0 if loss_on_prompt else min(len(prompt_ids), len(ids))
            else:
                ids = self.tokenizer(text, add_special_tokens=True)["input_ids"][: max_length - 1]
                n_context = 0
            out.append((ids + [eos], n_context))  # EOS teaches the model where a text ends
        return out

    def _batch(self, seqs: list[tuple[list[int], int]]):
        width = max(len(s) for s, _ in seqs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        targets = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (s, n_context) in enumerate(seqs):
            input_ids[i, : len(s)] = torch.tensor(s)
            attention[i, : len(s)] = 1
            targets[i, n_context: len(s)] = True
        # Loss positions come from the attention mask, never from comparing ids with pad_token_id:
        # pad == EOS here and the real EOS at the end of each sequence must stay in the loss.
        labels = input_ids.masked_fill(~targets, -100)
        return input_ids.to(self.device), attention.to(self.device), labels.to(self.device)

    def train(self, texts: list, cfg: TrainConfig, seed: int = 0, progress=None) -> TrainStats:
        """Train the current adapter on `texts` (call `reset` first for a fresh edit)."""
        if not texts:
            raise TrainingError("nothing to train on: the edit produced no training sequences")
        seqs = self._encode(texts, cfg.max_length)
        order_rng = random.Random(seed)
        batches_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
        accum = max(1, cfg.grad_accum_steps)
        total_steps = math.ceil(batches_per_epoch / accum) * cfg.epochs
        optimizer = torch.optim.AdamW(self.trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        schedule = _lr_lambda(cfg.lr_schedule, cfg.warmup_steps, total_steps)
        stats = TrainStats(n_sequences=len(seqs))
        _sync(self.device)
        start = time.perf_counter()
        self.model.train()
        grad_mode = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # callers may sit inside torch.no_grad()
        try:
            for epoch in range(cfg.epochs):
                order = list(range(len(seqs)))
                order_rng.shuffle(order)
                epoch_loss, epoch_batches = 0.0, 0
                starts = list(range(0, len(order), cfg.batch_size))
                for n_batch, b in enumerate(starts):
                    batch = [seqs[i] for i in order[b: b + cfg.batch_size]]
                    input_ids, attention, labels = self._batch(batch)
                    n_targets = int((labels != -100).sum())
                    loss = self.model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"loss became {loss.item()} at step {stats.steps} (epoch {epoch}); "
                            "lower the learning rate or check the training texts")
                    (loss / accum).backward()
                    value = loss.item()
                    if stats.steps == 0 and epoch_batches == 0:
                        stats.first_loss = value
                    stats.last_loss = value
                    stats.tokens += n_targets
                    stats.padded_tokens += attention.numel()
                    epoch_loss += value
                    epoch_batches += 1
                    # Step every `accum` batches and at the end of the epoch.
                    if (n_batch + 1) % accum == 0 or n_batch == len(starts) - 1:
                        for group in optimizer.param_groups:
                            group["lr"] = cfg.learning_rate * schedule(stats.steps)
                        if cfg.max_grad_norm:
                            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        stats.steps += 1
                        if progress:
                            progress(stats.steps, total_steps)
                stats.epoch_losses.append(epoch_loss / max(epoch_batches, 1))
        finally:
            torch.set_grad_enabled(grad_mode)
            self.model.eval()
            optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        stats.seconds = time.perf_counter() - start
        return stats

    @torch.no_grad()
    def loss_on(self, texts: list, max_length: int = 2048) -> float:
        """Mean target-token loss of the current model on `texts` (strings or (prompt, completion))."""
        total, count = 0.0, 0
        for seq in self._encode(texts, max_length):
            input_ids, attention, labels = self._batch([seq])
            n = int((labels[:, 1:] != -100).sum())
            loss = self.model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            total += loss.item() * n
            count += n
        return total / max(count, 1)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = None, merge_adapter: bool | None = None) -> list[str]:
        """Complete each prompt (already formatted). Greedy by default; batched with left padding.

        `merge_adapter` (default: on CUDA only) generates on merged weights; see `merged_adapter`.
        """
        if not prompts:
            return []
        with self.fast_generation(merge_adapter):
            return self._generate(prompts, max_new_tokens, batch_size, do_sample, temperature, top_p, seed)

    def _generate(self, prompts, max_new_tokens, batch_size, do_sample, temperature, top_p, seed) -> list[str]:
        if self.generation_mode != "eager":
            try:
                return self._generate_batches(prompts, max_new_tokens, batch_size, do_sample, temperature,
                                              top_p, seed, compiled=True)
            except Exception as err:  # a backend that cannot compile here must not sink the run
                log.warning("compiled generation (%s) failed, falling back to eager generation for the "
                            "rest of this run: %s: %s", self.generation_mode, type(err).__name__, err)
                self.generation_mode = "eager"
        return self._generate_batches(prompts, max_new_tokens, batch_size, do_sample, temperature, top_p,
                                      seed, compiled=False)

    def _generate_batches(self, prompts, max_new_tokens, batch_size, do_sample, temperature, top_p, seed,
                          compiled: bool) -> list[str]:
        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        outputs: list[str] = [""] * len(prompts)
        # Longest prompts first so batches hold similar lengths (less padding); results go back
        # to their original positions.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        rng = torch.Generator(device="cpu")
        if seed is not None:
            rng.manual_seed(seed)
        try:
            for b in range(0, len(order), batch_size):
                idx = order[b: b + batch_size]
                rows = [prompts[i] for i in idx]
                if compiled:
                    # Batches come in a few fixed shapes (filler rows repeat the last prompt and are
                    # dropped) so the compiled decode step is reused, not recompiled per batch.
                    rows += [rows[-1]] * (_row_bucket(len(rows), batch_size) - len(rows))
                enc = tok(rows, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
                if compiled:
                    kwargs.update(_static_cache_kwargs(self.generation_mode, enc["input_ids"].shape[1],
                                                       max_new_tokens))
                if do_sample:
                    # One seed per batch drawn from the run's generator: reproducible sampling
                    # that does not depend on what ran before in this process.
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=rng)))
                    kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                out = self.model.generate(**enc, **kwargs)
                new = out[:, enc["input_ids"].shape[1]:]
                for j, i in enumerate(idx):
                    outputs[i] = tok.decode(new[j], skip_special_tokens=True).strip()
        finally:
            tok.padding_side = old_side
        return outputs


def generation_mode(device: str, requested: str | None = None) -> str:
    """How `InnerLoop.generate` decodes: `eager`, or a compiled static-cache decode step.

    `auto` (the default; the environment variable SEALBENCH_GENERATION overrides it) is eager on
    the CPU, and on CUDA `inductor` (torch.compile, mode reduce-overhead: fused kernels replayed as
    a CUDA graph) when Triton is available, else `cudagraphs` (the same capture without Triton).
    Greedy answers are the same tokens up to bf16 rounding of differently fused kernels.
    """
    mode = requested or os.environ.get("SEALBENCH_GENERATION", "auto")
    if mode not in ("auto", "eager", "inductor", "cudagraphs"):
        raise ValueError(f"unknown generation mode {mode!r}; use auto, eager, inductor or cudagraphs")
    if mode == "auto":
        if not device.startswith("cuda"):
            return "eager"
        try:
            from torch.utils._triton import has_triton
            return "inductor" if has_triton() else "cudagraphs"
        except ImportError:
            return "cudagraphs"
    return mode


def _row_bucket(n: int, batch_size: int) -> int:
    """Rows of a compiled generation batch: a power of two, at least 8, at most `batch_size`."""
    return max(n, min(batch_size, max(8, 2 ** math.ceil(math.log2(max(n, 1))))))


def _static_cache_kwargs(mode: str, prompt_length: int, max_new_tokens: int) -> dict:
    """`generate` arguments for a static KV cache and a compiled decode step.

    The cache length is rounded up to a multiple of 512 (transformers keeps the largest length
    seen), so a run compiles the decode step once per shape bucket instead of once per batch.
    """
    from transformers.generation.configuration_utils import CompileConfig

    if mode == "inductor":
        compile_config = CompileConfig(fullgraph=False, dynamic=False, backend="inductor",
                                       mode="reduce-overhead")
    else:
        compile_config = CompileConfig(fullgraph=False, dynamic=False, backend="cudagraphs", mode=None)
    needed = prompt_length + max_new_tokens
    return dict(cache_implementation="static", max_cache_len=512 * math.ceil(needed / 512),
                compile_config=compile_config)


def _lr_lambda(kind: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "constant":
            return 1.0
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        raise ValueError(f"unknown lr_schedule {kind!r}; use constant, linear or cosine")
    return factor


def format_prompt(tokenizer, text: str, style: str = "auto") -> str:
    """Wrap a prompt for the model: `chat` uses the tokenizer's chat template, `plain` leaves it raw.

    `auto` picks chat when the tokenizer has a template (instruct models answer far more sensibly
    inside it). The choice is recorded in every run's config.
    """
    if style == "auto":
        style = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if style == "plain":
        return text
    if style == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    raise ValueError(f"unknown prompt style {style!r}; use auto, chat or plain")


def resolve_prompt_style(tokenizer, style: str) -> str:
    if style == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    return style
