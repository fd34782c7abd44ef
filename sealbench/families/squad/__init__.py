"""The knowledge-incorporation family: SQuAD passages, asked without their context (docs/design.md §1a).

Modules, in the order data flows through them: data (passages, SEAL's evaluation set, notes files),
prompts (answer and self-edit prompts, self-edit -> training sequences), protocols (the units a
run needs), episode (THE episode: adapt, answer, grade), continual (merged edits in sequence),
metrics (unit rows -> results-table rows), rl (the hooks of SEAL's RL loop), family (the family object
the runner drives, FAMILY; imports torch and the engine).

This file declares the family's facts and nothing else, so that config (task choices), the registry
and the reports read them without loading the family (family.py imports torch).
"""
from __future__ import annotations

NAME = "squad"
# task -> what it is (`sealbench list`); config's --task choices and every task -> family lookup
TASKS = {"seal_squad_nocontext": "SQuAD questions asked without their passage (SEAL knowledge incorporation)"}
# None: knowledge answers are graded by the run's --grader (match, em, f1, judge) and can be graded
# again over the stored answers (`sealbench grade`); rows record that grader.
FIXED_GRADER = None
