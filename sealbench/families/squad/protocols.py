"""The knowledge protocols' plans (docs/design.md §1a): which units a run needs.

* single: one unit per (contender, passage, self-edit index): an adapter on that passage's
  sequences with that self-edit, answering that passage's questions.
* cpt (continued pretraining at scale N): one unit per (contender, N): one adapter on the first N
  passages' sequences (every self-edit of each), answering all their questions. A contender that
  does not adapt answers per passage (the same units as the single protocol, so they are shared).
* continual: one unit per (contender, sequence): K passages in a seeded random order, each edit
  merged before the next (continual.py).

A unit's identity is what determines its answers (families/base.py), so CPT at N=1 with the single
protocol's inner-loop settings *is* the single unit, and every unit is reused across runs and
graders (a reused row is graded with the run's grader over its stored answers: regrade.py).
"""
from __future__ import annotations

import random

from ...config import RunConfig
from ..base import EditRef, Unit, derive_seed, stable_hash
from .episode import AnswerSettings


def settings_identity(config: RunConfig, with_grader: bool = False) -> dict:
    """The settings every knowledge unit's answers depend on. The grader is not one of them: it
    runs over stored answers (regrade.py), so switching graders trains nothing. `with_grader`
    gives the identity of the older scheme that included it (continual units, and `migrate`)."""
    ident = config.identity()
    answer = AnswerSettings(config.answer_style, config.max_answer_tokens, config.answer_stops)
    out = {"train": config.train_settings().model_dump(mode="json"),
           "lora": config.lora_settings().model_dump(mode="json"),
           "answer": {"style": answer.style, "max_tokens": answer.max_tokens, "stops": list(answer.stops)},
           "max_statements": config.max_statements, "device": ident["device"],
           "dtype": ident["dtype"], "seed": config.seed}
    if with_grader:
        out["grader"] = config.grader
    return out


def procedure(c) -> dict:
    """What a contender does (its name and description are not part of its results' identity, nor
    is where its notes file lies: each note's text is in its self-edit's key, edits.py)."""
    where = {"file"} if c.edits == "file" else set()  # others keep `file: null` (their keys unchanged)
    return c.model_dump(mode="json", exclude={"name", "description", "k", "role", *where})


def plan(config: RunConfig, contenders: list, passages: list, sources, fingerprints: dict,
         legacy_keys: bool = False) -> list[Unit]:
    """The units of a knowledge run, in a stable order. `sources` is an edits.EditSources (edit
    keys); `fingerprints` maps "base" / "policy:<name>" to the weight fingerprint adapted.
    `legacy_keys`: the keys of the older scheme with the grader in every unit (migrate re-keys)."""
    common = settings_identity(config, with_grader=legacy_keys)
    units: list[Unit] = []

    def unit(c, items, edits, info, kind="episode", extra=None):
        model = fingerprints["policy:" + c.name] if c.edits == "policy" else fingerprints["base"]
        by_id = {p.id: p for p in items}
        edit_keys = [sources.key_for(c, by_id[ref.item_id], ref.index) for ref in edits]
        ident = {"kind": kind, "model": model, "procedure": procedure(c), "items": [p.digest for p in items],
                 "edits": edit_keys, **common, **(extra or {})}
        units.append(Unit(stable_hash(ident), c, list(items), list(edits), info))

    if config.protocol == "single":
        for p in passages:
            for c in contenders:
                for e in range(c.edits_per_item):
                    refs = [EditRef(c.name, p.id, e)] if c.edits != "none" else []
                    unit(c, [p], refs, {"passage_id": p.id, "edit_index": e})
    elif config.protocol == "cpt":
        for c in contenders:
            if not c.adapt:
                for p in passages:
                    unit(c, [p], [], {"passage_id": p.id, "edit_index": 0})
                continue
            for n in config.cpt_n:
                items = passages[:n]
                refs = [EditRef(c.name, p.id, e) for p in items for e in range(c.edits_per_item)] \
                    if c.edits != "none" else []
                unit(c, items, refs, {"n": n})
    else:
        for c in contenders:
            if not c.adapt:
                continue  # nothing to merge; its accuracy is row 0 of every matrix
            for s, order in enumerate(sequences(config, len(passages))):
                items = [passages[i] for i in order]
                refs = [EditRef(c.name, p.id, 0) for p in items] if c.edits != "none" else []
                # Two sequences that happen to share an order are still two independent samples.
                # A continual row keeps only its predictions by position and the graded matrix, so
                # it cannot be regraded without re-running: its key keeps the grader.
                unit(c, items, refs, {"sequence": s}, kind="continual",
                     extra={"sequence": s, "grader": config.grader})
    return units


def sequences(config: RunConfig, pool: int) -> list[list[int]]:
    """The continual protocol's S orders of K pool indices, each from its own seeded RNG."""
    return [random.Random(derive_seed(config.seed, "continual-sequence", s)).sample(range(pool), config.steps)
            for s in range(config.sequences)]

