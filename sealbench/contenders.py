"""Contenders: one small declarative YAML file each in `baselines/`, read into a `Contender`.

A knowledge contender answers three questions:
  * does it adapt (train a LoRA adapter) or not?              -> `adapt`
  * where do its self-edits (notes) come from?                -> `notes.source`
        none (passage only) | self (sampled from the model) | file (cached teacher notes)
        | endpoint (live OpenAI-compatible teacher) | policy (the SEAL RL-trained policy)
  * is the passage in the answer prompt?                      -> `answer_with_context`
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

NOTE_SOURCES = ("none", "self", "file", "endpoint", "policy")


class ContenderError(ValueError):
    """A contender file or override that does not make sense; the message says which and why."""


@dataclass
class NotesSpec:
    source: str = "none"
    prompt: str = "implications"
    k: int = 1                       # self-edits per passage (one adapter each, accuracies averaged)
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 256
    file: str | None = None          # for source=file; relative paths are resolved in the data dir
    endpoint: dict = field(default_factory=dict)  # for source=endpoint: base_url, model, max_tokens


@dataclass
class Contender:
    name: str
    task: str = "seal_squad_nocontext"
    description: str = ""
    adapt: bool = True
    answer_with_context: bool = False
    include_passage: bool = True     # SEAL always appends the raw passage as a training sequence
    notes: NotesSpec = field(default_factory=NotesSpec)
    policy: dict = field(default_factory=dict)  # notes.source=policy: RL preset + overrides (sealbench.rl)

    @property
    def needs_notes(self) -> bool:
        return self.adapt and self.notes.source != "none"

    @property
    def edits_per_passage(self) -> int:
        return self.notes.k if self.needs_notes else 1

    def to_dict(self) -> dict:
        return asdict(self)


def baselines_dir() -> Path:
    """`baselines/` at the repository root, or $SEALBENCH_BASELINES_DIR."""
    env = os.environ.get("SEALBENCH_BASELINES_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "baselines"


def _from_dict(raw: dict, source: str) -> Contender:
    if not isinstance(raw, dict) or "name" not in raw:
        raise ContenderError(f"{source}: a contender file needs at least `name:`")
    raw = dict(raw)
    notes_raw = raw.pop("notes", None) or {}
    unknown = set(raw) - {f for f in Contender.__dataclass_fields__}
    unknown_notes = set(notes_raw) - {f for f in NotesSpec.__dataclass_fields__}
    if unknown or unknown_notes:
        raise ContenderError(f"{source}: unknown field(s) {sorted(unknown | unknown_notes)}")
    notes = NotesSpec(**notes_raw)
    if notes.source not in NOTE_SOURCES:
        raise ContenderError(f"{source}: notes.source {notes.source!r} must be one of {', '.join(NOTE_SOURCES)}")
    if notes.k < 1:
        raise ContenderError(f"{source}: notes.k must be >= 1 (got {notes.k})")
    if notes.source == "file" and not notes.file:
        raise ContenderError(f"{source}: notes.source is file but notes.file is not set")
    if notes.source == "policy" and not raw.get("policy"):
        raw["policy"] = {"preset": "cpu"}
    return Contender(notes=notes, **raw)


def available() -> dict[str, Path]:
    return {p.stem: p for p in sorted(baselines_dir().glob("*.yaml"))}


def load_contender(name_or_path: str) -> Contender:
    """A contender by name (a file in baselines/) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        files = available()
        if name_or_path not in files:
            raise ContenderError(f"unknown contender {name_or_path!r}; available: {', '.join(files)} "
                                 f"(or pass a path to a contender .yaml)")
        path = files[name_or_path]
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ContenderError(f"contender file {path} not found") from None
    except yaml.YAMLError as err:
        raise ContenderError(f"{path} is not valid YAML: {err}") from None
    return _from_dict(raw, str(path))


def with_overrides(contender: Contender, k: int | None = None, max_new_tokens: int | None = None,
                   seal_preset: str | None = None) -> Contender:
    """Apply run-wide knobs (--k, --notes-max-tokens, --seal-preset) to contenders that write notes."""
    import copy

    c = copy.deepcopy(contender)
    if seal_preset and c.notes.source == "policy":
        c.policy = {**c.policy, "preset": seal_preset}
    if c.needs_notes:
        if k is not None:
            c.notes.k = k
        if max_new_tokens is not None and c.notes.source in ("self", "policy", "endpoint"):
            c.notes.max_new_tokens = max_new_tokens
    return c
