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
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
from .config import RunConfig
from .edits import EditSources, Pending
from .engine.inner_loop import Engine, Hooks
from .executors import LocalExecutor, check_executor
from .grading import GraderError
from .engine.models import load_model
from .families import recorded_grader
from .families.base import stable_hash
from .regrade import ensure, stamp
from .report.results import run_markdown
from .store import RESULTS, SELF_EDITS, RunFolder, build_manifest, cached_rows, now_iso


class RunError(RuntimeError):
    """A whole-run problem (bad config, no data): one clear line for the user."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; its message says what was saved and what was lost (cli.py prints it)."""


@dataclass
class RunResult:
    folder: Path
    rows: list[dict]                 # the results table
    markdown: str
    n_units: int = 0
    n_reused: int = 0
    n_computed: int = 0
    failures: list[str] = field(default_factory=list)   # "<unit label>: <error>"
    phases: dict = field(default_factory=dict)          # this invocation's wall time by phase (`_phases`)


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
    clock = {"start": time.perf_counter()}
    p = prepare(config)
    cfg = p.config
    check_executor(cfg)  # e.g. --executor ray without Ray: one line before any model loads
    clock["prepared"] = time.perf_counter()
    try:
        base_loaded = loaded or load_model(cfg.model, cfg.device, cfg.dtype)
    except KeyboardInterrupt:
        raise Interrupted(f"while loading the model {cfg.model}: nothing was written yet (no run folder); "
                          "re-run the same command") from None
    clock["loaded"] = time.perf_counter()
    bar = _overall_bar(p, base_loaded.fingerprint, progress)   # one bar and ETA: RL edits, then units
    try:
        policies = _policies(p, bar, say)
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        raise Interrupted(f"while training the SEAL policy (an RL run folder under {cfg.reports_dir}): every "
                          "sample, reward and round already written is kept; re-run the same command to resume "
                          "it") from None
    clock["policies"] = time.perf_counter()
    fingerprints = {"base": base_loaded.fingerprint, **{f"policy:{n}": q.fingerprint for n, q in policies.items()}}
    engines: dict = {"base": lambda: Engine(base_loaded, cfg.lora_settings(), cfg.edits_per_batch, cfg.gen_batch_size)}
    for name, policy in policies.items():
        engines["policy:" + name] = (lambda q=policy: Engine(q.load(cfg.device, cfg.dtype), cfg.lora_settings(),
                                                           cfg.edits_per_batch, cfg.gen_batch_size))
    executor = make_executor(p.family, cfg, p.grader, engines, fingerprints, policies)
    sources = EditSources(p.family, cfg, fingerprints, executor.engines, cfg.data_dir)
    plan = p.family.plan(cfg, p.contenders, p.items, sources, fingerprints)
    for line in getattr(p.family, "plan_notes", lambda *a: [])(cfg, p.contenders):
        say(line)
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
            clock["planned"] = clock["edits"] = clock["units"] = time.perf_counter()
            say(f"run folder: {folder.path}  ({len(plan)} units: {len(plan) - len(pending) - len(reused)} done "
                f"here, {len(reused)} reused from other runs, {len(pending)} to compute; {_threads()} torch "
                f"thread(s))")
            if pending:
                saved, sampling = [0], True
                try:
                    edits = _edits(folder, pending, sources, cfg.reports_dir, bar)
                    sampling = False
                    clock["edits"] = time.perf_counter()
                    bar.total += len(pending)
                    _compute(executor, folder, pending, edits, bar, p.grader, saved)
                except KeyboardInterrupt:
                    if sampling:
                        raise Interrupted(f"while sampling the self-edits of {len(pending)} unit(s): the self-edits "
                                          "of this batch were not saved yet, finished units and reused rows in "
                                          f"{folder.path} are kept; re-run the same command to resume") from None
                    raise Interrupted(f"while training and answering units: {saved[0]} finished unit(s) of "
                                      f"{len(pending)} were saved in {folder.path}, {len(pending) - saved[0]} in "
                                      "flight or queued were lost; re-run the same command to resume") from None
                clock["units"] = time.perf_counter()
            latest = folder.latest(RESULTS)
            rows_by_key = {u.key: latest[u.key] for u in plan if u.key in latest}
            common = {"run_id": rid, "task": cfg.task, "protocol": cfg.protocol, "model": base_loaded.name,
                      "model_fingerprint": base_loaded.fingerprint, "grader": _grader_name(cfg),
                      "eval_set": p.eval_set, "device": _device_name(folder), "seed": cfg.seed, "written": now_iso()}
            table = p.family.summarize(cfg, plan, rows_by_key, common)
            markdown = run_markdown(table) if table else ""
            phases = _phases(clock, [latest[u.key] for u in pending if u.key in latest], loaded is not None)
            markdown += _phases_markdown(phases) if markdown else ""
            failures = [f"{u.label}: {rows_by_key[u.key]['error']}" for u in plan
                        if u.key in rows_by_key and rows_by_key[u.key]["status"] != "ok"]
            if len(rows_by_key) == len(plan):
                folder.finish(table, markdown, len(plan))
    except GraderError:
        if new:  # the grader failed before any row (a judge's key, URL or model): leave no half folder
            _drop_if_empty(Path(cfg.reports_dir) / rid)
        raise
    finally:
        executor.close()
        bar.close()
    return RunResult(folder.path, table, markdown, len(plan), len(reused), len(pending), failures, phases)


def _phases(clock: dict, computed: list[dict], given_model: bool) -> dict:
    """This invocation's wall time (seconds) split into phases that add up to it: checks, model
    load, SEAL policies (trained or found: rl/), planning (plan, run folder, reuse), sampling self-edits, the units (their rows'
    attributed training, answering and grading, and the rest: engine set-up, writing rows) and the
    results table. Self-edit time is the sampling phase here, not the rows' `generate_s` (which a
    reused self-edit carries from the run that sampled it)."""
    now = time.perf_counter()
    t = {k: sum(r.get("timing", {}).get(k) or 0.0 for r in computed) for k in ("train_s", "answer_s", "grade_s")}
    units = clock["units"] - clock["edits"]
    out = {"checks_s": clock["prepared"] - clock["start"],
           "model_load_s": 0.0 if given_model else clock["loaded"] - clock["prepared"],
           "policies_s": clock["policies"] - clock["loaded"],
           "plan_s": clock["planned"] - clock["policies"], "self_edits_s": clock["edits"] - clock["planned"],
           "units_train_s": t["train_s"], "units_answer_s": t["answer_s"], "units_grade_s": t["grade_s"],
           "units_other_s": units - sum(t.values()), "summary_s": now - clock["units"]}
    if given_model:  # a model handed in (tests, lm-eval) loaded before this call
        out["checks_s"] += clock["loaded"] - clock["prepared"]
    out["wall_s"] = now - clock["start"]
    return out


def _phases_markdown(phases: dict) -> str:
    labels = {"checks_s": "config, data and contender checks", "model_load_s": "model load",
              "policies_s": "SEAL policies (RL training or loading)", "plan_s": "plan, run folder, reuse", "self_edits_s": "self-edits (sampling, fetching)",
              "units_train_s": "units: training", "units_answer_s": "units: answering",
              "units_grade_s": "units: grading", "units_other_s": "units: other (engine set-up, writing rows)",
              "summary_s": "results table", "wall_s": "wall time"}
    lines = ["", "### wall time of this invocation (seconds)", "",
             "Phases that add up to the wall time of the command that wrote this page (a resumed run: "
             "only its own work).", "", "| phase | seconds |", "|:--|--:|"]
    lines += [f"| {labels[k]} | {v:.1f} |" for k, v in phases.items()]
    return "\n".join(lines) + "\n"


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


def _edits(folder: RunFolder, units: list, sources: EditSources, reports_dir, bar=None) -> dict[str, list]:
    """unit key -> [(EditRef, edit row)] for every pending unit, producing the missing self-edits
    (a `self-edits` bar beside `bar` counts them as each generation batch finishes)."""
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
        from tqdm.auto import tqdm

        sampling = tqdm(total=len(missing), desc="self-edits", unit="edit", leave=False, dynamic_ncols=True,
                        disable=bar is None or bar.disable)
        Hooks.generated = sampling.update
        Hooks.decoded = _token_postfix(sampling)
        try:
            produced = sources.produce(missing)
            sampling.update(len(missing) - sampling.n)  # fetched ones (notes files, endpoints) too
        finally:
            Hooks.generated = Hooks.decoded = None
            sampling.close()
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


def _compute(executor, folder: RunFolder, pending: list, edits: dict, bar, grader=None, saved=None) -> None:
    """Every pending unit through the executor; rows appended (fsynced) as each group of units
    finishes, each answer's verdict kept under its grader's name (regrade.py). The bar counts
    finished units; between hand-backs its postfix shows training steps and an ETA from their rate
    (this process's engines only). `saved[0]` counts the units whose rows were written."""
    bar.set_description("units")
    saved = saved if saved is not None else [0]
    label = [""]
    Hooks.trained = _step_eta(bar, label)
    try:
        for batch, rows in executor.run(pending, edits):
            folder.append(RESULTS, stamp(rows, grader) if grader is not None else rows)
            saved[0] += len(batch)
            label[0] = batch[-1].label[:40]
            bar.set_postfix_str(label[0])
            bar.update(len(batch))
    finally:
        Hooks.trained = None


def _token_postfix(bar):
    """Hooks.decoded for the self-edits bar: 'token t/max' of the batch being sampled, so a batch of
    long notes shows it is moving (at most twice a second)."""
    last = [0.0]

    def decoded(step: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 0.5:
            last[0] = now
            bar.set_postfix_str(f"token {step}/{total}")

    return decoded


def _step_eta(bar, label: list):
    """Hooks.trained for `_compute`: 'train done/total, ETA m:ss' (micro-batches of the engine's
    queue; the time left at the rate so far, answering between hand-backs included) in the bar's
    postfix, at most twice a second."""
    start, last = [time.perf_counter(), 0.0], [0.0]

    def trained(done: int, total: int) -> None:
        now = time.perf_counter()
        if done <= 1:
            start[0] = now
            return
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        left = (now - start[0]) / (done - 1) * (total - done)
        eta = f"{int(left // 60)}:{int(left % 60):02d}"
        bar.set_postfix_str(f"train {done}/{total}, ETA {eta}" + (f" · {label[0]}" if label[0] else ""))

    return trained


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
    """The grader the run's rows record (the family's own, ARC: exact-grid; else --grader)."""
    return recorded_grader(cfg.family, cfg.grader)


def _device_name(folder: RunFolder) -> str:
    import json

    try:
        return json.loads((folder.path / "manifest.json").read_text()).get("device_name", "")
    except (OSError, ValueError):
        return ""
