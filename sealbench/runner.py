"""The one loop every run goes through: plan -> pending units -> self-edits -> episodes -> rows ->
results table.

1. Resolve the config; the task's family loads its items (passages, ARC tasks).
2. SEAL policies (contenders whose self-edits come from the RL-trained policy) are trained, or found
   finished in the reports dir, before anything else: a run only reads them (rl/).
3. The family plans units; each unit's key is a hash of what determines its result.
4. The model loads; only then is the run folder created and locked (store.py).
5. Units with a row in this folder, or with a successful row of the same key in any other run
   folder under the reports dir, are reused (`reused_from`); the rest are pending.
6. Pending units' self-edits are fetched or sampled (edits.py, content-keyed and cached).
7. Pending units go to the engine K at a time (families' `run`); rows are appended after every
   batch, so a kill loses at most the batch in flight.
8. When every planned unit has a row, the family turns rows into the results table, and the
   folder is finished (summary files, then COMPLETE).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
from .config import RunConfig
from .edits import EditSources, Pending
from .engine.inner_loop import Engine
from .executors import LocalExecutor, check_executor
from .grading import GraderError
from .engine.models import load_model
from .families.base import stable_hash
from .regrade import ensure, stamp
from .report.results import run_markdown
from .store import RESULTS, SELF_EDITS, RunFolder, build_manifest, cached_rows, now_iso


class RunError(RuntimeError):
    """A whole-run problem (bad config, no data): one clear line for the user."""


@dataclass
class RunResult:
    folder: Path
    rows: list[dict]                 # the results table
    markdown: str
    n_units: int = 0
    n_reused: int = 0
    n_computed: int = 0
    failures: list[str] = field(default_factory=list)   # "<unit label>: <error>"


def run_id(config: RunConfig, contenders: list, eval_set: str, fingerprint: str, sources=None) -> str:
    """`<task>[-<protocol>]-<model>-<hash>`: the config's identity, the contenders, the evaluation set
    (by content), the weights and, with `sources`, the content of every notes file a contender reads."""
    model = Path(str(config.model)).name.replace(".gguf", "")
    ident = {"config": config.identity(), "contenders": [c.model_dump(mode="json") for c in contenders],
             "eval_set": eval_set, "model": fingerprint}
    files = {c.name: sources.source_id(c) for c in contenders if c.edits == "file"} if sources is not None else {}
    if files:
        ident["notes_files"] = files
    proto = f"-{config.protocol}" if config.protocol != "single" else ""
    return f"{config.task.replace('_', '-')}{proto}-{model}-{stable_hash(ident, 10)}".lower()


@dataclass
class Prepared:
    """A validated run before any model loads: what `run` and `--dry-run` both start from."""
    config: RunConfig            # resolved
    family: object
    items: list
    eval_set: str
    contenders: list
    grader: object
    rl_configs: dict             # policy contender name -> RLConfig


def prepare(config: RunConfig) -> Prepared:
    """Resolve and check everything a user can get wrong, before a model loads or a folder
    appears: the task, the data, the contenders (run-wide --k applied), the grader, the RL
    presets of policy contenders, the reports dir and the notes files. Raises one-line errors."""
    cfg = config.resolve()
    fam = registry.family(cfg.task)
    items, eval_set = fam.load_items(cfg)
    contenders = []
    for name in dict.fromkeys(cfg.contenders):
        c = registry.load_contender(name, fam.name)
        if cfg.k is not None and c.edits in ("self", "file", "endpoint", "policy"):
            c = c.updated(k=cfg.k)  # --k: self-edits per item of every note-writing contender
        contenders.append(c)
    grader = _grader(cfg)
    rl_configs = {}
    if any(c.edits == "policy" for c in contenders) and not cfg.policy_model:
        from .rl import policy_config

        rl_configs = {c.name: policy_config(cfg, c) for c in contenders if c.edits == "policy"}
    reports = Path(cfg.reports_dir)
    if reports.exists() and not reports.is_dir():
        raise RunError(f"--reports-dir {reports} is a file, not a folder; pass a folder")
    EditSources(fam, cfg, {}, {}, cfg.data_dir).check(contenders)
    return Prepared(cfg, fam, items, eval_set, contenders, grader, rl_configs)


def run(config: RunConfig, progress: bool = True, say=None, loaded=None) -> RunResult:
    """Run (or resume) one run; returns its results. Raises RunError / ConfigError / DataError /
    ModelLoadError / StoreError with one line for problems a user can fix."""
    say = say or (lambda msg: print(msg, file=sys.stderr))
    p = prepare(config)
    cfg = p.config
    check_executor(cfg)  # e.g. --executor ray without Ray: one line before any model loads
    base_loaded = loaded or load_model(cfg.model, cfg.device, cfg.dtype)
    bar = _overall_bar(p, base_loaded.fingerprint, progress)   # one bar and ETA: RL edits, then units
    policies = _policies(p, bar, say)
    fingerprints = {"base": base_loaded.fingerprint, **{f"policy:{n}": q.fingerprint for n, q in policies.items()}}
    engines: dict = {"base": lambda: Engine(base_loaded, cfg.lora_settings(), cfg.edits_per_batch, cfg.gen_batch_size)}
    for name, policy in policies.items():
        engines["policy:" + name] = (lambda q=policy: Engine(q.load(cfg.device, cfg.dtype), cfg.lora_settings(),
                                                           cfg.edits_per_batch, cfg.gen_batch_size))
    executor = make_executor(p.family, cfg, p.grader, engines, fingerprints, policies)
    sources = EditSources(p.family, cfg, fingerprints, executor.engines, cfg.data_dir)
    plan = p.family.plan(cfg, p.contenders, p.items, sources, fingerprints)
    if len({u.key for u in plan}) != len(plan):
        raise RunError("the plan has two units with the same content key (a contender listed twice under "
                       "two names?); remove the duplicate")
    rid = run_id(cfg, p.contenders, p.eval_set, base_loaded.fingerprint, sources)
    # config.json holds what decides the numbers; machine settings (threads, K, paths) are in the manifest
    resolved = {**cfg.identity(), "contender_specs": [c.model_dump(mode="json") for c in p.contenders],
                "eval_set": p.eval_set, "item_ids": [getattr(i, "id", "") for i in p.items],
                "policies": {n: q.describe() for n, q in policies.items()}}
    new = not (Path(cfg.reports_dir) / rid).exists()
    try:
        with RunFolder.open(cfg.reports_dir, rid, resolved, quarantine=cfg.quarantine_corrupt) as folder:
            if not (folder.path / "manifest.json").exists():
                models = {"base": base_loaded.describe(), **{f"policy:{n}": q.describe() for n, q in policies.items()}}
                folder.write_manifest(build_manifest(resolved, models, base_loaded.device,
                                                     {"machine_settings": cfg.model_dump(mode="json"),
                                                      **_unit_keys(cfg)}))
            done = {k: r for k, r in folder.latest(RESULTS).items() if r.get("status") == "ok"}
            reused = _reuse(folder, plan, done, cfg.reports_dir, p.grader)
            pending = [u for u in plan if u.key not in done]
            say(f"run folder: {folder.path}  ({len(plan)} units: {len(plan) - len(pending) - len(reused)} done "
                f"here, {len(reused)} reused from other runs, {len(pending)} to compute; {_threads()} torch "
                f"thread(s))")
            if pending:
                bar.total += len(pending)
                bar.set_description("self-edits")
                bar.refresh()
                edits = _edits(folder, pending, sources, cfg.reports_dir)
                _compute(executor, folder, pending, edits, bar, p.grader)
            latest = folder.latest(RESULTS)
            rows_by_key = {u.key: latest[u.key] for u in plan if u.key in latest}
            common = {"run_id": rid, "task": cfg.task, "protocol": cfg.protocol, "model": base_loaded.name,
                      "model_fingerprint": base_loaded.fingerprint, "grader": _grader_name(cfg),
                      "eval_set": p.eval_set, "device": _device_name(folder), "seed": cfg.seed, "written": now_iso()}
            table = p.family.summarize(cfg, plan, rows_by_key, common)
            markdown = run_markdown(table) if table else ""
            failures = [f"{u.label}: {rows_by_key[u.key]['error']}" for u in plan
                        if u.key in rows_by_key and rows_by_key[u.key]["status"] != "ok"]
            if len(rows_by_key) == len(plan):
                folder.finish(table, markdown)
    except GraderError:
        if new:  # the grader failed before any row (a judge's key, URL or model): leave no half folder
            _drop_if_empty(Path(cfg.reports_dir) / rid)
        raise
    finally:
        executor.close()
        bar.close()
    return RunResult(folder.path, table, markdown, len(plan), len(reused), len(pending), failures)


def make_executor(family, config, grader, engines: dict, fingerprints: dict, policies: dict):
    """The config's executor: this process (`local`), or Ray actors (`ray`, executors_ray.py), which
    load the base model and any SEAL policy (`policies`) themselves."""
    if config.executor == "ray":
        from .executors_ray import RayExecutor

        return RayExecutor(family, config, grader, engines, fingerprints, policies)
    return LocalExecutor(family, config, grader, engines, fingerprints)


def _policies(p: Prepared, progress: bool, say) -> dict:
    """The policy of each policy contender: a ready checkpoint (--policy-model), or the finished
    RL run of its config, trained first when there is none (rl/)."""
    if p.config.policy_model:
        from .rl import ReadyPolicy

        return {c.name: ReadyPolicy(p.config.policy_model, p.config.device, p.config.dtype)
                for c in p.contenders if c.edits == "policy"}
    from .rl import ensure_policy

    return {name: ensure_policy(rl, p.config.reports_dir, p.config.data_dir, progress, say)
            for name, rl in p.rl_configs.items()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _reuse(folder: RunFolder, plan: list, done: dict, reports_dir, grader=None) -> list:
    """Copy successful rows of planned units from other run folders into this one; their stored
    answers are graded with this run's grader (another grader's run shares the units: regrade.py)."""
    cache = cached_rows(reports_dir, RESULTS, exclude=folder.path)
    reused = []
    for u in plan:
        if u.key in done or u.key not in cache:
            continue
        source, row = cache[u.key]
        row = {**row, "contender": u.contender.name, **u.info, "reused_from": row.get("reused_from") or source}
        if grader is not None:
            row = ensure(row, grader)
        reused.append(row)
        done[u.key] = row
    folder.append(RESULTS, reused)
    return reused


def _edits(folder: RunFolder, units: list, sources: EditSources, reports_dir) -> dict[str, list]:
    """unit key -> [(EditRef, edit row)] for every pending unit, producing the missing self-edits."""
    wanted: dict[str, Pending] = {}
    per_unit: dict[str, list[tuple]] = {}
    for u in units:
        items = {getattr(i, "id", None): i for i in u.items}
        for ref in u.edits:
            p = Pending(ref, u.contender, items[ref.item_id])
            key = sources.key(p)
            wanted.setdefault(key, p)
            per_unit.setdefault(u.key, []).append((ref, key))
    have = {k: r for k, r in folder.latest(SELF_EDITS).items() if not r.get("error")}
    others = cached_rows(reports_dir, SELF_EDITS, exclude=folder.path)
    copied = [others[k][1] for k in wanted if k not in have and k in others]
    folder.append(SELF_EDITS, copied)
    have.update({r["key"]: r for r in copied})
    missing = [p for k, p in wanted.items() if k not in have]
    if missing:
        produced = sources.produce(missing)
        folder.append(SELF_EDITS, produced)
        have.update({r["key"]: r for r in produced})
    return {uk: [(ref, have[k]) for ref, k in pairs] for uk, pairs in per_unit.items()}


def _overall_bar(p: Prepared, fingerprint: str, progress: bool):
    """The run's one progress bar: inner-loop edits of SEAL RL rounds still to train, then units."""
    from tqdm.auto import tqdm

    from .rl.loop import remaining_edits

    total = sum(remaining_edits(rl, p.config.reports_dir, fingerprint, p.config.data_dir) for rl in p.rl_configs.values())
    # Shown after a second: a run without RL rounds prints its run-folder line before an empty bar.
    return tqdm(total=total, desc="SEAL RL" if total else "units", unit="edit", disable=not progress,
                dynamic_ncols=True, delay=1.0)


def _compute(executor, folder: RunFolder, pending: list, edits: dict, bar, grader=None) -> None:
    """Every pending unit through the executor; rows appended (fsynced) as each batch finishes,
    each answer's verdict kept under its grader's name (regrade.py)."""
    bar.set_description("units")
    for batch, rows in executor.run(pending, edits):
        folder.append(RESULTS, stamp(rows, grader) if grader is not None else rows)
        bar.set_postfix_str(batch[-1].label[:40])
        bar.update(len(batch))


def _unit_keys(cfg) -> dict:
    """The manifest's record of how knowledge units are keyed (issue 20; report/migrate.py)."""
    if cfg.family != "squad":
        return {}
    if cfg.protocol == "continual":
        return {"unit_keys": {"scheme": "with-grader", "note": "continual rows keep the graded matrix, not each "
                              "question, so their keys and seeds keep the grader"}}
    return {"unit_keys": {"scheme": "grader-free", "note": "unit keys and seeds leave the grader out; answers "
                          "carry verdicts by grader (sealbench grade)"}}


def _drop_if_empty(path: Path) -> None:
    """Remove a run folder this run created that holds nothing but its config and manifest."""
    import shutil

    left = {p.name for p in path.iterdir()} - {"config.json", "manifest.json", ".lock", ".lock.json"}
    if not left or all(p.stat().st_size == 0 for p in path.iterdir() if p.name in left):
        shutil.rmtree(path, ignore_errors=True)


def _grader(cfg):
    from .grading import get_grader

    return get_grader(cfg.grader)


def _grader_name(cfg) -> str:
    return "exact-grid" if cfg.family == "arc" else cfg.grader


def _device_name(folder: RunFolder) -> str:
    import json

    try:
        return json.loads((folder.path / "manifest.json").read_text()).get("device_name", "")
    except (OSError, ValueError):
        return ""
