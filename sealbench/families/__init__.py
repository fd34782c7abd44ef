"""Task families: families/squad (knowledge incorporation) and families/arc (ARC few-shot).

Each family's package declares its facts in its __init__.py, without loading the family object
(family.py, which imports torch and the engine): NAME, TASKS (task -> what it is) and FIXED_GRADER
(the grader its rows always record, or None: the run's --grader). They are gathered here once so
that config (the --task choices), the registry and the reports look them up instead of repeating
them; the family object (`Family`, base.py, loaded by registry.family) has only `name` of them.
"""
from __future__ import annotations

from . import arc, squad

PACKAGES = {p.NAME: p for p in (squad, arc)}          # family name -> its package, in listing order
TASK_FAMILY = {task: p.NAME for p in PACKAGES.values() for task in p.TASKS}


def recorded_grader(family: str, configured: str) -> str:
    """The grader a row of `family` records: the family's FIXED_GRADER (ARC: exact-grid, whatever
    --grader says), else `configured` (the run's --grader). KeyError for an unknown family name."""
    return PACKAGES[family].FIXED_GRADER or configured
