"""The ARC few-shot family (docs/design.md §1b, docs/arc.md; SEAL §4.2): the model reads a puzzle's
demonstrations, writes a JSON self-edit that configures test-time training, an adapter is trained
with it, and the adapted model answers the held-out test input(s).

Modules, in the order data flows through them:
  grids      grid text format, strict parsing of model output, validation
  augment    invertible grid transforms, colour / demo-order permutations, canonical dedup
  data       ARC tasks (SEAL's subsets, ARC-AGI-1, any ARC json) and the generated mini tier
  self_edit  the JSON self-edit: prompt, parse as data, validate, SEAL's budget rule
  guided     self-edit sampling: free JSON (SEAL) or guided per-field choices
  ttt        TTT data, voting prompts, votes, scores
  protocol   the plan: one unit per (contender, task, self-edit index)
  episode    THE episode, batched through the engine
  metrics    unit rows -> results-table rows
  rl         the hooks of SEAL's RL loop (one round, keep all-correct)
  family     the family object the runner drives (FAMILY; imports torch and the engine)

This file declares the family's facts and nothing else, so that config (task choices), the registry
and the reports read them without loading the family (family.py imports torch).
"""
from __future__ import annotations

NAME = "arc"
# task -> what it is (`sealbench list`); config's --task choices and every task -> family lookup
TASKS = {
    "seal_arc_fewshot": "ARC few-shot puzzles; self-edits are TTT configurations (SEAL's subsets)",
    "seal_arc_mini": "generated small-grid ARC-style puzzles with known answers (CPU tier)",
}
# An ARC answer is a grid, right or wrong cell for cell: every ARC row (runs, RL, migrated folders)
# records this grader whatever --grader says, and its answers are never regraded.
FIXED_GRADER = "exact-grid"
