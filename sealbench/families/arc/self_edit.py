"""ARC self-edits: the JSON training configuration a model writes for itself (docs/design.md §1b).

Schema (every field required)::

    {"data_generation": {"use_basic_augmentations": bool, "use_size_augmentations": bool,
                         "use_chain_augmentations": bool, "use_repeat_augmentations": bool},
     "training": {"strategy": "train_using_all_tokens" | "train_using_output_tokens",
                  "learning_rate": number in (0, 0.1], "num_train_epochs": integer >= 1}}

Model output is treated as *data only*: each ``{`` in turn opens a candidate balanced ``{...}``
block, handed to ``json.loads`` (never eval/exec) until one is an object with the config's keys,
which is then validated field by field (`find_config_object`). Anything else is an invalid
self-edit with a reason; the run records it with reward 0 and does not train. A valid config whose
training would exceed SEAL's budget (``num_train_epochs * n_examples / 2 > 375``, i.e. more than 375
optimiser steps at batch size 2) is recorded as ``over_budget``, also with reward 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from .grids import Grid, pair_text

STRATEGIES = ("train_using_all_tokens", "train_using_output_tokens")
FLAGS = ("use_basic_augmentations", "use_size_augmentations", "use_chain_augmentations",
         "use_repeat_augmentations")
MAX_LEARNING_RATE = 0.1
SEAL_STEP_BUDGET = 375
SEAL_BATCH = 2


@dataclass(frozen=True)
class ArcEditConfig:
    use_basic_augmentations: bool = False
    use_size_augmentations: bool = False
    use_chain_augmentations: bool = False
    use_repeat_augmentations: bool = False
    strategy: str = "train_using_output_tokens"
    learning_rate: float = 1e-4
    num_train_epochs: int = 2

    @property
    def output_tokens_only(self) -> bool:
        return self.strategy == "train_using_output_tokens"

    def to_json(self) -> dict:
        """The config in SEAL's nested JSON shape."""
        return {"data_generation": {f: getattr(self, f) for f in FLAGS},
                "training": {"strategy": self.strategy, "learning_rate": self.learning_rate,
                             "num_train_epochs": self.num_train_epochs}}

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def to_dict(self) -> dict:
        return asdict(self)


# SEAL's human-designed plan ("oracle"): all four families, output-token loss, lr 1e-4, 2 epochs.
ORACLE = ArcEditConfig(True, True, True, True, "train_using_output_tokens", 1e-4, 2)


@dataclass
class ParsedEdit:
    """One self-edit after parsing: `config` is set only when `status == "ok"`."""
    raw: str
    status: str                       # ok | invalid | over_budget (set later by `check_budget`)
    reason: str | None = None
    config: ArcEditConfig | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {"raw": self.raw, "status": self.status, "reason": self.reason,
                "config": self.config.to_dict() if self.config else None, "warnings": self.warnings}


class SelfEditError(ValueError):
    pass


# ------------------------------------------------------------------------------------ prompt
EDIT_INSTRUCTIONS = """You are setting up how a model will train itself on the puzzle above, by choosing from fixed tools.

1. Data generation: answer true or false for each of
   use_basic_augmentations (rotations, flips, transposes, reflections, translations),
   use_size_augmentations (2x resolution, 2x height, 2x width),
   use_chain_augmentations (a rotation or flip followed by 2x resolution),
   use_repeat_augmentations (tiling the grids 2x vertically, horizontally or both).
2. Training: choose "strategy" as "train_using_all_tokens" or "train_using_output_tokens",
   and give "learning_rate" (a number) and "num_train_epochs" (an integer).

Reply with one JSON object only, no explanation, in this shape:
{"data_generation": {"use_basic_augmentations": true, "use_size_augmentations": false, "use_chain_augmentations": false, "use_repeat_augmentations": false}, "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.0001, "num_train_epochs": 2}}"""


def edit_prompt(demos: list[tuple[Grid, Grid]]) -> str:
    """The self-edit prompt: the demonstrations only (never a test input), then the instructions."""
    return ("Here are the input -> output examples of a grid puzzle:\n\n"
            + "".join(pair_text(i, o) for i, o in demos) + "\n" + EDIT_INSTRUCTIONS)


# ------------------------------------------------------------------------------------ parsing
MAX_CANDIDATES = 64   # `{` positions tried per self-edit (bounds the work on brace-heavy output)
CONFIG_KEYS = ("data_generation", "training")


def balanced_block(text: str, start: int) -> str | None:
    """The balanced {...} block opening at `text[start]` (braces inside JSON strings skipped), or
    None when it is not closed before the end of the text."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def find_config_object(text: str) -> tuple[dict | None, str | None]:
    """(object, None) for the first balanced {...} block, trying each `{` in turn (the first
    `MAX_CANDIDATES`), that `json.loads` reads as an object with a "data_generation" or "training"
    key; else (None, reason): the parse error of the first block that is not JSON, or a note that
    no block is a config. Prose before the JSON may contain braces of its own ("I will use {basic}
    and {size} augmentations ... {"data_generation": ...}"). Never evaluates the text."""
    first_error, first_object = None, None
    start, tried = text.find("{"), 0
    while start != -1 and tried < MAX_CANDIDATES:
        tried += 1
        block = balanced_block(text, start)
        if block is not None:
            try:
                obj = json.loads(block, parse_constant=_reject_constant)
            except SelfEditError as err:
                first_error = first_error or str(err)
            except (json.JSONDecodeError, RecursionError) as err:
                first_error = first_error or f"not valid JSON: {err}"
            else:
                if isinstance(obj, dict) and any(k in obj for k in CONFIG_KEYS):
                    return obj, None
                first_object = first_object if first_object is not None else obj
        start = text.find("{", start + 1)
    if first_error:
        return None, first_error
    if first_object is not None:
        return first_object, None  # an object without the config's keys: validation names what is missing
    return None, "no complete JSON object {...} in the self-edit"


def _reject_constant(name: str):
    raise SelfEditError(f"{name} is not valid JSON (use a plain number)")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_config(text: str | None) -> ParsedEdit:
    """Parse and validate a model-written config. Never raises; never evaluates the text."""
    raw = text if isinstance(text, str) else ""
    def bad(reason: str) -> ParsedEdit:
        return ParsedEdit(raw=raw, status="invalid", reason=reason)

    if not raw.strip():
        return bad("empty self-edit")
    obj, reason = find_config_object(raw)
    if obj is None:
        return bad(reason)
    warnings = []
    extra = [k for k in obj if k not in ("data_generation", "training")]
    if extra:
        warnings.append(f"ignored unknown top-level key(s) {extra}")
    dg, tr = obj.get("data_generation"), obj.get("training")
    if not isinstance(dg, dict):
        return bad("missing or non-object \"data_generation\"")
    if not isinstance(tr, dict):
        return bad("missing or non-object \"training\"")
    flags = {}
    for f in FLAGS:
        if f not in dg:
            return bad(f"data_generation.{f} is missing")
        if not isinstance(dg[f], bool):
            return bad(f"data_generation.{f} must be true or false, got {dg[f]!r:.40}")
        flags[f] = dg[f]
    extra = [k for k in dg if k not in FLAGS]
    if extra:
        warnings.append(f"ignored unknown data_generation key(s) {extra}")
    for f in ("strategy", "learning_rate", "num_train_epochs"):
        if f not in tr:
            return bad(f"training.{f} is missing")
    strategy = tr["strategy"]
    if strategy not in STRATEGIES:
        return bad(f"training.strategy must be one of {list(STRATEGIES)}, got {strategy!r:.60}")
    lr = tr["learning_rate"]
    if not _is_number(lr):
        return bad(f"training.learning_rate must be a number, got {lr!r:.40}")
    if not math.isfinite(lr) or not 0 < lr <= MAX_LEARNING_RATE:
        return bad(f"training.learning_rate must be in (0, {MAX_LEARNING_RATE}], got {lr!r}")
    epochs = tr["num_train_epochs"]
    if not _is_number(epochs) or not math.isfinite(epochs) or epochs != int(epochs):
        return bad(f"training.num_train_epochs must be an integer, got {epochs!r:.40}")
    if epochs < 1:
        return bad(f"training.num_train_epochs must be at least 1, got {epochs!r}")
    if epochs > 10_000:
        return bad(f"training.num_train_epochs {epochs!r} is absurd (over budget for any data)")
    extra = [k for k in tr if k not in ("strategy", "learning_rate", "num_train_epochs")]
    if extra:
        warnings.append(f"ignored unknown training key(s) {extra}")
    cfg = ArcEditConfig(**flags, strategy=strategy, learning_rate=float(lr), num_train_epochs=int(epochs))
    return ParsedEdit(raw=raw, status="ok", config=cfg, warnings=warnings)


def steps_needed(epochs: int, n_examples: int, batch: int = SEAL_BATCH) -> float:
    return epochs * n_examples / batch


def check_budget(edit: ParsedEdit, n_examples: int, budget: int = SEAL_STEP_BUDGET,
                 batch: int = SEAL_BATCH) -> ParsedEdit:
    """Mark a valid edit `over_budget` when epochs x examples / batch > budget (SEAL: /2 > 375)."""
    if edit.valid and edit.config is not None:
        steps = steps_needed(edit.config.num_train_epochs, n_examples, batch)
        if steps > budget:
            edit.status = "over_budget"
            edit.reason = (f"{edit.config.num_train_epochs} epochs x {n_examples} examples / {batch} = "
                           f"{steps:g} steps > budget {budget}")
    return edit
