"""The ARC plan (docs/design.md §1b): one unit per (contender, task, self-edit index).

`icl` has one unit per task and no self-edit; `fixed` contenders (the oracle) one unit per task
with their config as the self-edit (edits.py serves it); `self` / `policy` contenders `k` units per
task, one sampled config each (SEAL: 5 per task; the headline counts (task, self-edit) pairs).

A unit's key hashes everything that determines its row (families/base.py): the kind
("arc-episode"), the adapted model's weight fingerprint (the base model, or the SEAL policy for
`policy` contenders: the policy is both the config writer and the model adapted), the contender's
procedure (its spec without name, description, k and role), the task's content digest, the
self-edit's key (edits.py: source, prompt, sampling, item, index, seed), the resolved TTT settings,
the LoRA settings, whether raw completions are kept, the device kind, the dtype and the run seed.
So any run with the same key reuses the row, and the unit's seed (TTT data sampling, adapter init,
data order) derives from the key alone.
"""
from __future__ import annotations

from ...config import RunConfig
from ..base import EditRef, Unit, stable_hash

KIND = "arc-episode"


def settings_identity(config: RunConfig) -> dict:
    """The run settings every ARC unit's result depends on."""
    ident = config.identity()
    return {"ttt": config.resolve().ttt.model_dump(mode="json"), "lora": config.lora_settings().model_dump(mode="json"),
            "keep_completions": config.keep_completions, "device": ident["device"], "dtype": ident["dtype"],
            "seed": config.seed}


def edits_per_task(config: RunConfig, c) -> int:
    """Units per task of contender `c`: the run's `k` (SEAL: 5; CPU budget: 2) overrides the
    contender's for sampled self-edits (self, policy); one for icl and fixed configs."""
    return (config.k or c.k) if c.edits in ("self", "policy") else c.edits_per_item


def plan(config: RunConfig, contenders: list, tasks: list, sources, fingerprints: dict) -> list[Unit]:
    """The units of an ARC run, task by task, in contender order. `sources` is an edits.EditSources
    (edit keys); `fingerprints` maps "base" / "policy:<name>" to the weights adapted."""
    common = settings_identity(config)
    units = []
    for t in tasks:
        for c in contenders:
            model = fingerprints["policy:" + c.name] if c.edits == "policy" else fingerprints["base"]
            what = c.model_dump(mode="json", exclude={"name", "description", "k", "role"})
            for e in range(edits_per_task(config, c)):
                refs = [] if c.edits == "none" else [EditRef(c.name, t.id, e)]
                ident = {"kind": KIND, "model": model, "procedure": what, "task": t.digest,
                         "edits": [sources.key_for(c, t, r.index) for r in refs], **common}
                info = {"task_id": t.id, **({"rule": t.rule} if t.rule else {}), "edit_index": e}
                units.append(Unit(stable_hash(ident), c, [t], refs, info))
    return units
