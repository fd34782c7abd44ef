"""What a task family gives the runner, and the identity of a unit of work.

A *unit* is one independent piece of a run (an episode: adapt on some items with some self-edits,
answer, grade; or a continual sequence). Its key is a hash of everything that determines its
answers — the model's weight fingerprint, the contender's resolved procedure, the items' content,
the self-edits it uses, the inner-loop and answer settings, the device kind and dtype, the run
seed — so any run with the same key reuses the row (store.py), and its seed derives from the key
alone (the same work gets the same randomness wherever it runs). The grader is not part of a
knowledge unit's key: stored answers are graded again (regrade.py); a continual unit, whose row
keeps only its graded matrix, keeps the grader in its key.

A family (families/squad, families/arc) is a module-level object, `FAMILY` in the family's
family.py, that satisfies `Family` below. Its facts (NAME, TASKS, FIXED_GRADER) are declared in the
family's __init__.py, which imports nothing, so that config and the reports read them without
loading the family (families/__init__.py: TASK_FAMILY, recorded_grader).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # names for annotations only: the families import this module, and torch loads late
    from ..config import ContenderSpec, RLConfig, RunConfig
    from ..edits import EditSources
    from ..engine.inner_loop import Engine
    from ..grading import Grader


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


# What `run` gets for a batch: unit key -> the unit's self-edits in its order, each an (EditRef,
# edit row) pair, the row as edits.py stores it (`text`, or `error`; `generate_s`). Rows are dicts.
Edits = dict[str, list[tuple[EditRef, dict]]]


class RLHooks(Protocol):
    """What SEAL's RL loop (rl/loop.py) asks of a family, as `Family.rl` (families/*/rl.py). Items
    are the family's items (passages, ARC tasks); `cfg` is the RLConfig; `batch` lists (item,
    self-edit text, seed). A family may also provide `reward_stream(engine, batch, cfg)`, yielding
    lists of (index into batch, reward dict) as episodes finish; the loop uses it when present."""

    def train_items(self, cfg: RLConfig, data_dir: str | None) -> list:
        """The first `cfg.n_items` training items. Raises the family's data error (DataError,
        ArcDataError: one line) when there are too few or they cannot be scored."""

    def heldout_items(self, cfg: RLConfig, data_dir: str | None) -> list:
        """Items scored before the first round and after every round ([] for none)."""

    def prompt(self, item, cfg: RLConfig) -> str:
        """The raw self-edit prompt for an item (the loop formats it for the policy)."""

    def sample(self, engine: Engine, prompts: list[str], seeds: list[int], cfg: RLConfig) -> list[str]:
        """One self-edit text per (formatted prompt, seed), in order."""

    def reward(self, engine: Engine, batch: list[tuple], cfg: RLConfig) -> list[dict]:
        """One {reward: float, details: dict} per (item, text, seed), in order. An invalid or failed
        self-edit earns 0.0 with its reason in details; nothing is raised for it."""

    def baselines(self, engine: Engine, items: list, cfg: RLConfig, r: int) -> dict[str, float]:
        """item id -> the reward without a self-edit (keep rule beats-passage), round `r`. Raises
        ValueError where the family has no such baseline (ARC)."""

    def heldout(self, engine: Engine, items: list, cfg: RLConfig) -> list[dict]:
        """One row per held-out item ({key, text, accuracy, details}) with the current policy."""


class Family(Protocol):
    """What a task family gives the runner (runner.py, executors*.py), the self-edit sources
    (edits.py), the dry run (estimate.py), the RL loop (`rl`) and the reports. `config` is the
    resolved RunConfig, `contender` a ContenderSpec, items the family's items (Passage, ArcTask).

    Optional members, looked up with getattr (a family without them gets the default):
      stream(engine, units, edits, config, grader) -> iterator of (units, their rows) as units
          finish, for any number of units (default: `run` on batches of engine.k units);
      describe_items(config, items) -> str, for headers (default: "<n> <item_noun>");
      plan_notes(config, contenders) -> [str], lines a run and a dry run print (default: none).
    """

    name: str                  # the package's NAME: contenders' `family:`, results rows' `family`
    item_noun: str             # what an item is called in messages ("passages", "tasks")
    rl: RLHooks

    def load_items(self, config: RunConfig) -> tuple[list, str]:
        """(the run's items, the evaluation set's id: eval_set_id over `<id>@<content digest>`).
        Raises the family's data error (DataError, ArcDataError: one line naming the fix) for
        missing or unreadable data, or fewer items than asked for."""

    def plan(self, config: RunConfig, contenders: list[ContenderSpec], items: list, sources: EditSources,
             fingerprints: dict[str, str]) -> list[Unit]:
        """Every unit of the run, in a stable order. `sources` gives edit keys (edits.py);
        `fingerprints` maps "base" / "policy:<contender>" to the weights a unit adapts."""

    def edit_prompt(self, contender: ContenderSpec, item) -> str:
        """The raw (unformatted) self-edit prompt for an item; never shows what is graded."""

    def sample_edits(self, engine: Engine, contender: ContenderSpec, prompts: list[str], seeds: list[int],
                     config: RunConfig) -> list[str]:
        """One self-edit text per (formatted prompt, seed), in order, from the engine's base
        weights (the base model or a policy)."""

    def run(self, engine: Engine, units: list[Unit], edits: Edits, config: RunConfig,
            grader: Grader) -> list[dict]:
        """One row per unit, in order: a batch of units through the inner loop. A unit that fails
        (an invalid self-edit, a failed training step; ARC: out of GPU memory) is a row with status
        "failed" and its error, not an exception; GraderError (a judge's key or endpoint) propagates
        (the runner removes a run folder it left empty)."""

    def summarize(self, config: RunConfig, plan: list[Unit], rows: dict[str, dict], common: dict) -> list[dict]:
        """Results-table rows (report.results.make_row) from the latest row of each unit
        (`rows`: unit key -> row); `common` holds the run-wide fields (run_id, task, grader, ...)."""

    def workload(self, u: Unit, config: RunConfig, tokenizer, sources: EditSources) -> Work:
        """What a unit costs the engine, for the dry run's estimate (no model runs)."""

    def calibration_prompts(self, items: list, config: RunConfig, tokenizer) -> list[str]:
        """Formatted answer prompts the dry run times on the device ([]: nothing to time)."""

    def answer(self, engine: Engine, prompts: list[str], config: RunConfig) -> list[str]:
        """Answers to `calibration_prompts` with the base weights (the dry run's timing)."""
