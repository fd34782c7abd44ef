"""ARC grids as text, and back.

Text format (docs/arc.md):
  * a grid is one line per row; a row is its cells as single digits separated by single spaces,
    inside square brackets:           [0 1 2]
                                      [3 4 5]
  * a demonstration pair is           "{input} -> {output}#\\n"
  * the query is                      "{input} -> "
  * the expected answer is            "{output}#"

Model output is parsed strictly (a grid the model half-wrote is not a grid): the text is cut at the
first ``#`` (the end marker), blank lines are ignored, and every remaining line must be one bracketed
row of digits 0-9. Anything else -- stray words, unequal row lengths, multi-digit cells, no rows, more
than 30 rows or columns -- gives ``None`` (an unparseable answer, scored wrong), never an exception.
"""
from __future__ import annotations

import re

Grid = tuple[tuple[int, ...], ...]

MAX_SIDE = 30
END = "#"
ARROW = " -> "

_ROW = re.compile(r"^\s*\[\s*([0-9](?:\s+[0-9])*)\s*\]\s*$")


class GridError(ValueError):
    """A grid in task data that is not a valid ARC grid; the message names the task and the grid."""


def as_grid(g) -> Grid:
    """Any nested sequence of ints -> an immutable, hashable Grid (no validation)."""
    return tuple(tuple(int(c) for c in row) for row in g)


def shape(g: Grid) -> tuple[int, int]:
    return (len(g), len(g[0]) if g else 0)


def validate_grid(g, where: str = "grid") -> Grid:
    """Check that `g` is a rectangular grid of ints 0-9, 1..30 on each side; return it as a Grid.

    `where` names the grid in messages, e.g. ``"task 3aa6fb7a train[1].output"``.
    """
    if not isinstance(g, (list, tuple)) or len(g) == 0:
        raise GridError(f"{where}: a grid must be a non-empty list of rows, got {type(g).__name__} {g!r:.60}")
    if len(g) > MAX_SIDE:
        raise GridError(f"{where}: {len(g)} rows, more than the ARC limit of {MAX_SIDE}")
    width = None
    for r, row in enumerate(g):
        if not isinstance(row, (list, tuple)) or len(row) == 0:
            raise GridError(f"{where}: row {r} must be a non-empty list of cells, got {row!r:.60}")
        if width is None:
            width = len(row)
            if width > MAX_SIDE:
                raise GridError(f"{where}: {width} columns, more than the ARC limit of {MAX_SIDE}")
        elif len(row) != width:
            raise GridError(f"{where}: row {r} has {len(row)} cells but row 0 has {width} (not rectangular)")
        for c, cell in enumerate(row):
            if isinstance(cell, bool) or not isinstance(cell, int) or not 0 <= cell <= 9:
                raise GridError(f"{where}: cell ({r},{c}) is {cell!r}; cells must be ints 0-9")
    return as_grid(g)


def fits(g: Grid, max_side: int = MAX_SIDE) -> bool:
    h, w = shape(g)
    return 1 <= h <= max_side and 1 <= w <= max_side


# ------------------------------------------------------------------------------------ to text
def grid_to_text(g: Grid) -> str:
    return "\n".join("[" + " ".join(str(c) for c in row) + "]" for row in g)


def pair_text(inp: Grid, out: Grid) -> str:
    """One demonstration: "{input} -> {output}#\\n"."""
    return f"{grid_to_text(inp)}{ARROW}{grid_to_text(out)}{END}\n"


def query_text(inp: Grid) -> str:
    return f"{grid_to_text(inp)}{ARROW}"


def answer_text(out: Grid) -> str:
    return f"{grid_to_text(out)}{END}"


def task_prompt(demos: list[tuple[Grid, Grid]], query: Grid) -> str:
    """The few-shot prompt: every demonstration, then the query (the model writes the answer)."""
    return "".join(pair_text(i, o) for i, o in demos) + query_text(query)


# ------------------------------------------------------------------------------------ parsing
def parse_grid(text: str | None, max_side: int = MAX_SIDE) -> Grid | None:
    """A grid from model output, or None when the text is not exactly one well-formed grid."""
    if not text:
        return None
    body = text.split(END, 1)[0]
    rows = []
    for line in body.splitlines():
        if not line.strip():
            continue
        m = _ROW.match(line)
        if m is None:
            return None
        rows.append(tuple(int(d) for d in m.group(1).split()))
    if not rows or len(rows) > max_side:
        return None
    width = len(rows[0])
    if width > max_side or any(len(r) != width for r in rows):
        return None
    return tuple(rows)
