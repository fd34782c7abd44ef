"""What a task family gives the runner, and the identity of a unit of work.

A *unit* is one independent piece of a run (an episode: adapt on some items with some self-edits,
answer, grade; or a continual sequence). Its key is a hash of everything that determines its
answers — the model's weight fingerprint, the contender's resolved procedure, the items' content,
the self-edits it uses, the inner-loop and answer settings, the device kind and dtype, the run
seed — so any run with the same key reuses the row (store.py), and its seed derives from the key
alone (the same work gets the same randomness wherever it runs). The grader is not part of a
knowledge unit's key: stored answers are graded again (regrade.py); a continual unit, whose row
keeps only its graded matrix, keeps the grader in its key.

A family (families/squad, families/arc) is a module-level object with:
    load_items(config)              -> (items, eval set id)
    plan(config, contenders, items, fingerprints) -> [Unit]
    edit_prompt(contender, item)    -> the raw self-edit prompt for sampled self-edits
    run(engine, units, edits, config) -> [row]        one batch of units through the inner loop
    summarize(config, plan, rows, common) -> [results-table row]
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


def stable_hash(obj, length: int = 20) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys), first `length` hex digits."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (never Python's salted hash())."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class Work:
    """What one unit costs the engine (the dry-run's cost model, estimate.py): training sequence
    lengths in tokens with their settings, generated rows (max new tokens each), questions answered,
    and how many adapters it trains in sequence (continual)."""
    seqs: list[int]
    train: object | None
    gen_rows: list[int]
    questions: int
    steps: int = 1


@dataclass(frozen=True)
class EditRef:
    """One self-edit a unit needs: the `index`-th self-edit of `contender` for `item`."""
    contender: str
    item_id: str
    index: int


@dataclass
class Unit:
    """One unit of work; `items` are the family's items (passages, ARC tasks) it uses, in order."""
    key: str
    contender: object                     # ContenderSpec
    items: list
    edits: list[EditRef] = field(default_factory=list)
    info: dict = field(default_factory=dict)   # row fields that describe it (passage_id, n, sequence...)

    @property
    def seed(self) -> int:
        return derive_seed("unit", self.key)

    @property
    def label(self) -> str:
        described = " ".join(f"{k}={v}" for k, v in self.info.items())
        return f"{self.contender.name} {described}".strip()
