"""SEAL's outer loop (ReST-EM; SEAL §3, docs/design.md §3), one loop for every task family.

One round:
  1. sample k self-edits per training item from the current policy (seeded per item and sample);
  2. reward each: `repeats` inner-loop episodes on the current policy, all batched through the
     engine; the reward is their mean (knowledge: adapted accuracy; ARC: task solved);
  3. keep by rule (`top1`: the best per item; `beats-passage`: only if better than the
     passage-only adapter; `all-correct`: every self-edit that solved its task);
  4. LoRA SFT of the policy on (self-edit prompt -> kept self-edit), loss on the self-edit only,
     merged into the weights: the next round's writer *and* the model that is adapted.
Held-out items (knowledge) are scored before the first round and after every round.

The family supplies the items, prompts, sampling and rewards (`family.rl`: families/squad/rl.py,
families/arc/rl.py). Every sample, reward and round is an artifact of the RL run folder
(`round_R/samples.jsonl`, `rewards.jsonl`, `kept.jsonl`, `policy_adapter.safetensors`, the
policy in PEFT's format `peft/`, `policy.json` written last, `stats.json`, `heldout.jsonl`), so a killed run resumes where it
stopped; the results table (protocol `rl`) and COMPLETE mark it finished.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .. import registry
from ..config import RLConfig
from ..engine.inner_loop import Engine, format_prompt
from ..engine.models import load_model
from ..engine.train import EditJob, train_edits
from ..families import recorded_grader
from ..families.base import derive_seed
from ..report.results import run_markdown
from ..schema import eval_set_id, make_row
from ..stats import mean_ci, paired_difference
from ..store import RunFolder, build_manifest, now_iso, read_json, write_json
from .policy import PEFT_DIR, Policy, chain_fingerprint, rl_data_digest, rl_run_id, write_peft


def select_kept(samples: list[dict], baselines: dict[str, float] | None, rule: str) -> list[dict]:
    """The kept samples (dicts with item_id, sample, reward), in item/sample order.

    `top1` (SEAL, knowledge): the best mean reward per item (ties: the lowest sample index).
    `beats-passage`: the same, kept only where it beats that item's passage-only reward.
    `all-correct` (SEAL, ARC): every sample with reward 1. A self-edit the validity rule rejected
    (`invalid: True`, e.g. more than max_statements statements) is never kept, whatever the rule.
    Raises ValueError for other rules."""
    ordered = sorted((s for s in samples if not s.get("invalid")), key=lambda s: (s["item_id"], s["sample"]))
    if rule == "all-correct":
        return [s for s in ordered if s["reward"] >= 1.0]
    if rule not in ("top1", "beats-passage"):
        raise ValueError(f"unknown keep rule {rule!r}")
    best: dict[str, dict] = {}
    for s in ordered:
        if s["item_id"] not in best or s["reward"] > best[s["item_id"]]["reward"]:
            best[s["item_id"]] = s
    kept = list(best.values())
    if rule == "beats-passage":
        if baselines is None:
            raise ValueError("keep rule beats-passage needs passage-only baselines")
        kept = [s for s in kept if s["reward"] > baselines[s["item_id"]]]
    return kept


def ensure_policy(cfg: RLConfig, reports_dir, data_dir=None, progress=True, say=None,
                  quarantine: bool = False) -> Policy:
    """The finished policy for `cfg` from `reports_dir`, training (or resuming) it there first when
    needed. Runs call this before they start; they never train inside a run."""
    return train(cfg, reports_dir, data_dir, progress, say, quarantine)


def remaining_edits(cfg: RLConfig, reports_dir, base_fingerprint: str, data_dir=None) -> int:
    """Inner-loop reward edits still to run for `cfg` (rounds without a policy), for progress bars."""
    folder = Path(reports_dir) / rl_run_id(cfg, base_fingerprint, data_dir=data_dir)
    if (folder / "COMPLETE").exists():
        return 0
    todo = sum(not (folder / f"round_{r}" / "policy.json").exists() for r in range(1, cfg.rounds + 1))
    return todo * cfg.n_items * cfg.k * cfg.repeats


def train(cfg: RLConfig, reports_dir, data_dir=None, progress=True, say=None, quarantine: bool = False) -> Policy:
    """Run (or resume, or find finished) the RL run of `cfg` under `reports_dir`; its policy.
    `progress`: a bool, or a tqdm bar to advance (a run's one overall bar)."""
    say = say or (lambda m: print(m, file=sys.stderr))
    fam = registry.family(cfg.task)
    hooks = fam.rl
    items = hooks.train_items(cfg, data_dir)
    heldout = hooks.heldout_items(cfg, data_dir)
    loaded = load_model(cfg.model, cfg.device, cfg.dtype)
    data_digest = rl_data_digest(items + heldout)
    rid = rl_run_id(cfg, loaded.fingerprint, data_digest)
    resolved = {"kind": "seal-rl", **cfg.identity(), "item_ids": [i.id for i in items],
                "heldout_ids": [i.id for i in heldout], "data_digest": data_digest}
    with RunFolder.open(reports_dir, rid, resolved, quarantine=quarantine) as folder, _reward_workers(cfg) as remote:
        if (folder.path / "COMPLETE").exists():
            return Policy.from_folder(folder.path, cfg)
        if (folder.path / "manifest.json").exists():  # read at the end: a corrupt one stops here, not after the rounds
            _manifest(folder.path)
        say(f"SEAL RL run: {folder.path} ({cfg.rounds} round(s), {len(items)} items x k={cfg.k} x {cfg.repeats} repeats)")
        if not (folder.path / "manifest.json").exists():
            folder.write_manifest(build_manifest(resolved, {"base": loaded.describe()}, loaded.device))
        fingerprint = loaded.fingerprint
        progress = progress if hasattr(progress, "update") else _bar(
            remaining_edits(cfg, reports_dir, loaded.fingerprint, data_dir), progress)
        _heldout(hooks, folder, loaded, heldout, cfg, 0, progress)
        for r in range(1, cfg.rounds + 1):
            rdir = folder.path / f"round_{r}"
            rdir.mkdir(exist_ok=True)
            if not (rdir / "policy.json").exists():
                _round(hooks, folder, rdir, loaded, items, cfg, r, fingerprint, progress, remote)
            fingerprint = _apply(loaded, rdir, cfg)
            _heldout(hooks, folder, loaded, heldout, cfg, r, progress)
        rows = _summary_rows(folder, cfg, rid, loaded, heldout, items)
        folder.finish(rows, run_markdown(rows))
        return Policy.from_folder(folder.path, cfg)


def _round(hooks, folder, rdir: Path, loaded, items, cfg: RLConfig, r: int, parent: str, progress: bool,
           remote=None) -> None:
    name = rdir.name
    engine = Engine(loaded, cfg.inner_lora, cfg.edits_per_batch)
    start = time.perf_counter()
    samples = folder.latest(f"{name}/samples.jsonl")
    todo = [(i, j) for i in items for j in range(cfg.k) if f"{i.id}|{j}" not in samples]
    for chunk in _chunks(todo, 8 * engine.k):
        prompts = [format_prompt(engine.tokenizer, hooks.prompt(i, cfg), cfg.notes_style) for i, _ in chunk]
        seeds = [derive_seed(cfg.seed, "rl-sample", r, i.id, j) for i, j in chunk]
        t = time.perf_counter()
        texts = hooks.sample(engine, prompts, seeds, cfg)
        per = (time.perf_counter() - t) / len(chunk)
        rows = [{"key": f"{i.id}|{j}", "item_id": i.id, "sample": j, "text": text, "generate_s": per}
                for (i, j), text in zip(chunk, texts)]
        folder.append(f"{name}/samples.jsonl", rows)
        samples.update({row["key"]: row for row in rows})
    sample_s = time.perf_counter() - start
    rewards = folder.latest(f"{name}/rewards.jsonl")
    by_id = {i.id: i for i in items}
    todo = [samples[k] for k in samples if k not in rewards]
    flat = [(by_id[s["item_id"]], s["text"], derive_seed(cfg.seed, "rl-reward", r, s["key"], rep))
            for s in todo for rep in range(cfg.repeats)]
    if remote is not None and todo:  # Ray workers with this round's policy, chunks in any order
        n = max(1, remote.start_round(folder.path, r, parent) // cfg.repeats)
        chunks = _chunks(flat, n * cfg.repeats)
        scored = ([(i * n * cfg.repeats + m, x) for m, x in enumerate(out)] for i, out in remote.rewards(chunks))
    elif hasattr(hooks, "reward_stream"):  # one queue through the engine's slots, longest edits first
        scored = hooks.reward_stream(engine, flat, cfg)
    else:
        n = max(1, engine.k // cfg.repeats) * cfg.repeats
        scored = ([(i + m, x) for m, x in enumerate(hooks.reward(engine, flat[i:i + n], cfg))]
                  for i in range(0, len(flat), n))
    for ready in _whole_samples(scored, todo, cfg.repeats):
        rows = [{"key": s["key"], "item_id": s["item_id"], "sample": s["sample"], "text": s["text"],
                 "reward": sum(m["reward"] for m in mine) / cfg.repeats,
                 "rewards": [m["reward"] for m in mine], "details": [m.get("details") for m in mine],
                 "invalid": any((m.get("details") or {}).get("invalid") for m in mine)}
                for s, mine in ready]
        folder.append(f"{name}/rewards.jsonl", rows)
        rewards.update({row["key"]: row for row in rows})
        progress.set_description(f"SEAL RL round {r}")
        progress.update(len(rows) * cfg.repeats)
    reward_s = time.perf_counter() - start - sample_s
    m = engine.meter  # this process's share of the rewards (none with Ray workers)
    inner = {"global_steps": m.steps, "passes": m.passes, "occupancy": round(m.occupancy, 4), "slots": m.slots,
             "flushes": m.flushes, "train_seconds": m.seconds, "trained_tokens": m.tokens,
             "trained_tokens_per_s": m.tokens / max(m.seconds, 1e-9)}
    scored = [rewards[f"{i.id}|{j}"] for i in items for j in range(cfg.k)]
    baselines = hooks.baselines(engine, items, cfg, r) if cfg.keep == "beats-passage" else None
    kept = select_kept(scored, baselines, cfg.keep)
    pairs = [{"key": s["key"], "item_id": s["item_id"], "reward": s["reward"],
              "prompt": format_prompt(engine.tokenizer, hooks.prompt(by_id[s["item_id"]], cfg), cfg.notes_style),
              "completion": s["text"]} for s in kept]
    engine.close()
    write_json(rdir / "kept.json", pairs)
    sft = _sft(loaded, rdir, pairs, cfg, r)
    stats = {"round": r, "n_items": len(items), "n_samples": len(scored), "n_kept": len(kept),
             "reward_all": mean_ci([s["reward"] for s in scored], cfg.seed),
             "reward_kept": mean_ci([s["reward"] for s in kept], cfg.seed), "sft": sft,
             "seconds": {"sample": sample_s, "reward": reward_s, "sft": sft.get("seconds", 0.0)},
             "edits_per_second": len(scored) * cfg.repeats / max(reward_s, 1e-9), "inner_loop": inner}
    if baselines is not None:
        stats["passage_baseline"] = mean_ci(list(baselines.values()), cfg.seed)
    write_json(rdir / "stats.json", stats)
    adapter = rdir / "policy_adapter.safetensors"
    write_peft(loaded.model, [rdir.parent / f"round_{i}" / adapter.name for i in range(1, r + 1)],
               cfg.sft_lora, loaded.source, rdir / PEFT_DIR)
    write_json(rdir / "policy.json", {"round": r, "parent_fingerprint": parent,
                                      "fingerprint": chain_fingerprint(parent, adapter), "written": now_iso()})


def _whole_samples(scored, todo: list[dict], repeats: int):
    """Group rewards (lists of (index into the samples' repeats, reward dict)) into samples whose
    repeats have all finished: yields lists of (sample, [reward dict per repeat])."""
    got: dict[int, dict[int, dict]] = {}
    for group in scored:
        ready = []
        for i, x in group:
            mine = got.setdefault(i // repeats, {})
            mine[i % repeats] = x
            if len(mine) == repeats:
                del got[i // repeats]
                ready.append((todo[i // repeats], [mine[rep] for rep in range(repeats)]))
        if ready:
            yield ready


@contextmanager
def _reward_workers(cfg: RLConfig):
    """`--executor ray`: the rewards' Ray workers (executors_ray.RLRewards), else None (this process)."""
    from ..executors import check_executor

    check_executor(cfg)
    if cfg.executor != "ray":
        yield None
        return
    from ..executors_ray import RLRewards

    remote = RLRewards(cfg)
    try:
        yield remote
    finally:
        remote.close()


def _sft(loaded, rdir: Path, pairs: list[dict], cfg: RLConfig, r: int) -> dict:
    """LoRA SFT of the policy on the kept pairs (loss on the completion); the adapter is saved."""
    from safetensors.torch import save_file

    engine = Engine(loaded, cfg.sft_lora, n_slots=1)
    texts = [(p["prompt"], p["completion"]) for p in pairs if (p["completion"] or "").strip()]
    info = {"n_pairs": len(texts)}
    if texts:
        stats = train_edits(engine.bank, engine.tokenizer, [EditJob(texts, cfg.sft, derive_seed(cfg.seed, "sft", r))])[0]
        info.update(first_loss=stats.first_loss, last_loss=stats.last_loss, steps=stats.steps,
                    seconds=stats.seconds, error=stats.error)
    else:
        engine.bank.B.zero_()  # nothing kept: the round leaves the policy as it was
    state = {k: v.contiguous().cpu() for k, v in engine.bank.slot_state(0).items()}
    save_file(state, str(rdir / "policy_adapter.safetensors"))
    engine.close()
    return info


def _apply(loaded, rdir: Path, cfg: RLConfig) -> str:
    """Merge a finished round's adapter into the weights (the same tensors give the same weights)."""
    from safetensors.torch import load_file

    policy = read_json(rdir / "policy.json", ROUND_FIX.format(rdir=rdir))
    engine = Engine(loaded, cfg.sft_lora, n_slots=1)
    engine.bank.load_slot_state(0, load_file(str(rdir / "policy_adapter.safetensors")))
    engine.bank.merge_into_base(0)
    engine.close()
    loaded.fingerprint = policy["fingerprint"]
    return policy["fingerprint"]


def _heldout(hooks, folder, loaded, heldout: list, cfg: RLConfig, r: int, progress: bool) -> None:
    """Score the current policy on the held-out items (families that have them)."""
    if not heldout:
        return
    name = f"round_{r}/heldout.jsonl"
    (folder.path / f"round_{r}").mkdir(exist_ok=True)
    done = folder.latest(name)
    todo = [i for i in heldout if i.id not in done]
    if todo:
        engine = Engine(loaded, cfg.inner_lora, cfg.edits_per_batch)
        for chunk in _chunks(todo, 4 * engine.k):  # each chunk one queue through the slots
            folder.append(name, hooks.heldout(engine, chunk, cfg))
        engine.close()


def _summary_rows(folder, cfg: RLConfig, rid: str, loaded, heldout: list, items: list) -> list[dict]:
    manifest = _manifest(folder.path)
    common = dict(run_id=rid, task=cfg.task, protocol="rl", model=loaded.name.split("+")[0],
                  model_fingerprint=manifest["models"]["base"]["fingerprint"],
                  contender="seal", grader=recorded_grader(cfg.family, cfg.grader),
                  device=manifest.get("device_name", ""),
                  seed=cfg.seed, written=now_iso())
    train_set = eval_set_id("rl-train", [f"{i.id}@{i.digest}" for i in items])
    rows = []
    for r in range(1, cfg.rounds + 1):
        rdir = folder.path / f"round_{r}"
        st = read_json(rdir / "stats.json", ROUND_FIX.format(rdir=rdir))
        for metric in ("reward_all", "reward_kept"):
            s = {k: math.nan if v is None else v for k, v in st[metric].items()}  # JSON null: no number (NaN)
            rows.append(make_row(**common, eval_set=train_set, metric=metric, at=f"round={r}", value=s["mean"],
                                 ci_low=s["ci_low"], ci_high=s["ci_high"], n=s["n"], unit="edits"))
    if heldout:
        held_set = eval_set_id("seal-eval", [f"{i.id}@{i.digest}" for i in heldout])
        acc = {r: {x["key"]: x["accuracy"] for x in folder.rows(f"round_{r}/heldout.jsonl")}
               for r in range(cfg.rounds + 1)}
        for r in range(cfg.rounds + 1):
            s = mean_ci(list(acc[r].values()), cfg.seed)
            rows.append(make_row(**common, eval_set=held_set, metric="heldout_accuracy", at=f"round={r}",
                                 value=s["mean"], ci_low=s["ci_low"], ci_high=s["ci_high"], n=s["n"], unit="passages"))
            if r:
                ids = sorted(set(acc[r]) & set(acc[0]))
                d = paired_difference([acc[r][i] for i in ids], [acc[0][i] for i in ids], cfg.seed)
                rows.append(make_row(**common, eval_set=held_set, metric="heldout_diff", at=f"round={r}",
                                     vs="round=0", value=d["mean"], ci_low=d["ci_low"], ci_high=d["ci_high"],
                                     p_value=d["p_value"], n=d["n"], unit="passages"))
    return rows


ROUND_FIX = "delete the folder {rdir} and re-run the same command (that round is trained again)"


def _manifest(folder: Path) -> dict:
    """The RL run folder's manifest.json; a corrupt one (a full disk, an edit) is one line with the fix."""
    fix = (f"delete that file and re-run the same command (it is written again; finished rounds in {folder} "
           "are kept)")
    manifest = read_json(folder / "manifest.json", fix)
    try:
        manifest["models"]["base"]["fingerprint"]
    except (TypeError, KeyError):
        from ..store import StoreError

        raise StoreError(f"{folder / 'manifest.json'} has no models.base.fingerprint; {fix}") from None
    return manifest


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="SEAL RL", unit="edit", disable=not enabled, dynamic_ncols=True)


def _chunks(xs: list, n: int) -> list[list]:
    return [xs[i:i + n] for i in range(0, len(xs), max(1, n))]
