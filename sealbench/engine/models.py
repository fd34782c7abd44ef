"""Loading the language model a run adapts: device, dtype and threads, a loaded model with its
fingerprint and license, and the tiny random model tests use. Where the weights come from (named
models, GGUF conversion, content fingerprints) is checkpoints.py.

Module-level imports are torch, transformers and the standard library only; `gguf` is needed only
when a .gguf is converted (the GPU box has no lm-eval, datasets or gguf).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .checkpoints import EMBEDDED, MODELS, ModelLoadError, fingerprint_of, fix_tokenizer, license_of, quiet, resolve


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str          # short human name, e.g. "SmolLM2-135M-Instruct"
    source: str        # where the weights were read from
    fingerprint: str   # sha256 of the weight files (first 16 hex chars)
    device: str
    dtype: str
    license: str = "unknown: check the model card"  # short notice: licence name + URL

    def describe(self) -> dict:
        """JSON-ready summary for run manifests (n_parameters counts every parameter)."""
        return {"name": self.name, "source": self.source, "fingerprint": self.fingerprint,
                "license": self.license, "device": self.device, "dtype": self.dtype,
                "n_parameters": sum(p.numel() for p in self.model.parameters())}


def set_threads(threads: int | str | None = "auto") -> int:
    """Set torch's CPU thread count and return the number now in use.

    ``auto`` (or None/0): min(usable CPUs, 8) -- usable CPUs from ``os.sched_getaffinity`` where
    the OS has it, else ``os.cpu_count()``. It no longer looks at the load average, which stays high
    for minutes after an install and used to pin runs to one thread. Beyond ~8 threads a model of
    this size gains little. Raises ``ValueError`` for a value that is not a positive integer.
    """
    if threads in (None, "auto", 0):
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        threads = min(max(cores, 1), 8)
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer or 'auto', got {threads!r}")
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda when torch sees one, else cpu. Raises ModelLoadError for cuda without CUDA."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was asked for but torch sees no CUDA device; use --device cpu")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """float32 on CPU (bf16 matmuls are slow there and change numerics); bf16 on a GPU that has it.
    Raises ModelLoadError for an unknown dtype name."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    return table[dtype]


def load_model(spec: str = EMBEDDED, device: str = "auto", dtype: str = "auto",
               verbose: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer ready for sealbench (eval mode, pad token set).

    Quiet unless ``verbose`` or $SEALBENCH_VERBOSE=1. Raises ModelLoadError (one line, with the fix)
    for an unknown spec, a missing weights package, a bad device or dtype, or unreadable weights.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    name, location = resolve(spec, verbose)
    with quiet(verbose):
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype)
        except OSError as err:
            raise ModelLoadError(
                f"could not load model {spec!r}: {(str(err).splitlines() or [''])[0]} Pass one of {', '.join(MODELS)}, "
                "a local checkpoint directory, a .gguf file, or a hub id in your local Hugging Face cache.") from err
        except Exception as err:  # garbage weights: safetensors' header errors, shape mismatches
            if not isinstance(err, (ValueError, RuntimeError, KeyError)) and "Safetensor" not in type(err).__name__:
                raise
            raise ModelLoadError(
                f"could not load model {spec!r}: the weights in {location} are unreadable "
                f"({(str(err).splitlines() or [''])[0][:160]}); replace them with a whole checkpoint "
                "(re-download or re-convert) or pass another --model") from None
    fix_tokenizer(tokenizer, model.config)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=str(location),
                       fingerprint=fingerprint_of(location), device=device,
                       dtype=str(torch_dtype).replace("torch.", ""), license=license_of(spec, location))


def tiny_random_model(seed: int = 0, vocab_from: LoadedModel | None = None, **overrides) -> LoadedModel:
    """A small randomly initialised Llama with the embedded tokenizer, for fast unit tests.
    ``overrides`` go to LlamaConfig. Raises ModelLoadError when the embedded model is unavailable."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if vocab_from:
        tokenizer = vocab_from.tokenizer
    else:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(resolve(EMBEDDED)[1])
    cfg = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
               tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"tiny-random-{seed}", source="random",
                       fingerprint=f"random-{seed}", device="cpu", dtype="float32", license="n/a (random weights)")
