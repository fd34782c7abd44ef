"""SEAL's outer loop (ReST-EM), one loop for both task families (docs/DESIGN.md §3).

`OuterLoop` is the family-independent part: rounds, the keep rule, SFT of the policy on the kept
(prompt -> self-edit) pairs, merging, artifacts and resume. A family supplies how self-edits are
sampled and rewarded: `SealTrainer` below (knowledge incorporation: notes -> adapted accuracy) and
`sealbench.arc.rl.ArcSealTrainer` (ARC: JSON TTT configs -> task solved).

One knowledge round:
  1. sample k self-edits (notes) per training passage from the current policy;
  2. reward each by the inner loop: train a fresh adapter on notes + passage on top of the policy,
     answer the passage's questions closed-book, grade; average over `repeats` seeds;
  3. keep the best self-edit per passage (rule `top1`, SEAL's; or `beats-passage`: only if it beats
     the passage-only adapter on that passage);
  4. fine-tune the policy on (self-edit prompt -> kept notes) with LoRA, loss on the notes only, and
     merge the adapter into the weights. The merged model is the next round's note writer *and* the
     model that gets adapted.

Everything is an artifact of the RL run folder, and every unit (a sampled note's reward, a
passage's baseline) is a row, so a killed run resumes at the unit it stopped in:

    round_1/notes.jsonl      sampled notes (per passage and sample index)
    round_1/baseline.jsonl   passage-only rewards (keep rule beats-passage only)
    round_1/samples.jsonl    rewards of every sampled note (per repeat, and their mean)
    round_1/kept.jsonl       the selected (prompt, notes) pairs
    round_1/policy_adapter.safetensors + policy.json   the SFT adapter, its fingerprint, SFT losses
    round_1/stats.json       reward statistics of the round
    round_R/heldout.jsonl    (heldout_passages > 0) the policy after round R -- round_0: the starting
                             model -- writes one note per held-out evaluation passage, an adapter is
                             trained on it and graded: accuracy per round, paired against round 0
    summary.json             all rounds
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean

from . import knowledge
from .contenders import NotesSpec
from .inner_loop import InnerLoop, LoRAConfig, TrainConfig, TrainingError, format_prompt
from .knowledge import Passage
from .models import LoadedModel, load_model
from .notes import sample_self_notes
from .presets import read_preset
from .runfolder import RunFolder, build_manifest, derive_seed, now_iso, write_json_atomic
from .stats import fmt_ci, mean_ci, paired_difference

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets" / "seal_rl"
KEEP_RULES = ("top1", "beats-passage", "all-correct")


@dataclass
class RLConfig:
    model: str = "embedded"
    split: str = "train"              # SEAL's 100-passage RL pool
    n_passages: int = 100
    k: int = 5                        # sampled self-edits per passage per round
    repeats: int = 3                  # inner-loop seeds averaged into one reward
    rounds: int = 2
    keep: str = "top1"
    heldout_passages: int = 0         # SEAL eval passages scored after every round (0: none)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    grader: str = "match"
    answer_style: str = "plain"
    notes_style: str = "auto"
    max_answer_tokens: int = 64
    notes_batch_size: int = 8
    notes: NotesSpec = field(default_factory=lambda: NotesSpec(source="policy", max_new_tokens=256))
    inner_lora: LoRAConfig = field(default_factory=LoRAConfig)
    inner_train: TrainConfig = field(default_factory=TrainConfig)
    sft_lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(r=64, alpha=128))
    sft_train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=3e-4, epochs=2))

    def validate(self) -> None:
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep rule {self.keep!r} must be one of {', '.join(KEEP_RULES)}")
        for name in ("n_passages", "k", "repeats", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"RL config: {name} must be >= 1 (got {getattr(self, name)})")
        if self.heldout_passages < 0:
            raise ValueError(f"RL config: heldout_passages must be >= 0 (got {self.heldout_passages})")


def load_preset(name_or_path: str, **overrides) -> RLConfig:
    """An RL preset by name (presets/seal_rl/<name>.yaml) or path, with overrides applied."""
    _, raw = read_preset(PRESETS_DIR, name_or_path, "SEAL RL preset")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(raw)


def config_from_dict(raw: dict) -> RLConfig:
    raw = dict(raw)
    nested = {"notes": NotesSpec, "inner_lora": LoRAConfig, "inner_train": TrainConfig,
              "sft_lora": LoRAConfig, "sft_train": TrainConfig}
    kwargs = {}
    for key, cls in nested.items():
        if key in raw:
            value = raw.pop(key)
            kwargs[key] = value if isinstance(value, cls) else cls(**{
                k: tuple(v) if k == "target_modules" else v for k, v in (value or {}).items()})
    unknown = set(raw) - set(RLConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown RL config field(s): {sorted(unknown)}")
    cfg = RLConfig(**raw, **kwargs)
    cfg.notes.source = "policy"
    cfg.validate()
    return cfg


# ---------------------------------------------------------------------------------- keep rule
def select_kept(samples: list[dict], baselines: dict[str, float] | None, rule: str) -> list[dict]:
    """The kept samples. Samples are dicts with item_id, sample, reward.

    `top1` (SEAL, knowledge): the best mean reward per item (ties -> lowest sample index).
    `beats-passage`: the same, but only where it beats that item's passage-only reward (`baselines`).
    `all-correct` (SEAL, ARC): every sample with reward 1 (the task was solved).
    """
    ordered = sorted(samples, key=lambda s: (s["item_id"], s["sample"]))
    if rule == "all-correct":
        return [s for s in ordered if s["reward"] >= 1.0]
    best: dict[str, dict] = {}
    for s in ordered:
        if s["item_id"] not in best or s["reward"] > best[s["item_id"]]["reward"]:
            best[s["item_id"]] = s
    kept = list(best.values())
    if rule == "beats-passage":
        if baselines is None:
            raise ValueError("keep rule beats-passage needs passage-only baselines")
        kept = [s for s in kept if s["reward"] > baselines[s["item_id"]]]
    elif rule != "top1":
        raise ValueError(f"unknown keep rule {rule!r}")
    return kept


# ---------------------------------------------------------------------------------- the loop
class OuterLoop:
    """ReST-EM rounds over a family's items; subclasses set `self.config` (with model, device,
    dtype, seed, rounds, keep, inner_lora, sft_lora, sft_train), `self.resolved` and `self.folder`,
    and implement `_score_samples` and `_policy_prompt`."""

    config: object
    resolved: dict
    folder: RunFolder

    def __init__(self, progress: bool = True):
        self.progress = progress
        self.loaded: LoadedModel | None = None
        self.fingerprint = ""

    # -- public ---------------------------------------------------------------------------
    def train(self) -> LoadedModel:
        """Run (or resume) every round; return the final policy model (weights merged)."""
        self.loaded = load_model(self.config.model, self.config.device, self.config.dtype)
        self.fingerprint = self.loaded.fingerprint
        if not (self.folder.path / "manifest.json").exists():
            self.folder.write_manifest(build_manifest(self.resolved, self.loaded.describe(), self.loaded.device))
        self._evaluate_heldout(0)
        for r in range(1, self.config.rounds + 1):
            rdir = self.folder.path / f"round_{r}"
            rdir.mkdir(exist_ok=True)
            if not (rdir / "policy.json").exists():
                self._run_round(r, rdir)
            self._apply_policy(rdir)
            self._evaluate_heldout(r)
        self._write_summary()
        return self.loaded

    def summary(self) -> dict:
        path = self.folder.path / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # -- one round ------------------------------------------------------------------------
    def _run_round(self, r: int, rdir: Path) -> None:
        cfg = self.config
        loop = InnerLoop(self.loaded, cfg.inner_lora)
        samples = self._score_samples(r, loop)
        baselines = self._baselines(r, loop) if cfg.keep == "beats-passage" else None
        kept = select_kept(samples, baselines, cfg.keep)
        pairs = [{"key": s["key"], "item_id": s["item_id"], "reward": s["reward"],
                  "prompt": self._policy_prompt(loop, s["item_id"]), "completion": s["text"]} for s in kept]
        write_jsonl_atomic(rdir / "kept.jsonl", pairs)
        policy = self._sft(r, rdir, pairs)
        rewards = [s["reward"] for s in samples]
        phases = sorted({k for s in samples for k in s["seconds"]})
        stats = {
            "round": r, "n_items": len({s["item_id"] for s in samples}), "n_samples": len(samples),
            "n_kept": len(kept), "mean_reward_all": mean_ci(rewards, seed=cfg.seed),
            "mean_reward_kept": mean_ci([s["reward"] for s in kept], seed=cfg.seed),
            "mean_passage_baseline": mean_ci(list(baselines.values()), seed=cfg.seed) if baselines else None,
            "policy_fingerprint": policy["fingerprint"], "sft": policy["sft"],
            "seconds": {k: round(sum(s["seconds"].get(k, 0.0) for s in samples), 2) for k in phases},
        }
        runs = len(samples) * getattr(cfg, "repeats", 1)
        stats["edits_per_second"] = runs / max(1e-9, sum(stats["seconds"].values()))
        write_json_atomic(rdir / "stats.json", stats)

    def _score_samples(self, r: int, loop: InnerLoop) -> list[dict]:
        """Sample and reward this round's self-edits: rows with key, item_id, sample, text, reward, seconds."""
        raise NotImplementedError

    def _policy_prompt(self, loop: InnerLoop, item_id: str) -> str:
        """The exact prompt the policy saw when writing a self-edit for `item_id` (the SFT input)."""
        raise NotImplementedError

    def _baselines(self, r: int, loop: InnerLoop) -> dict[str, float]:
        raise ValueError(f"keep rule beats-passage is not available for {type(self).__name__}")

    def _evaluate_heldout(self, r: int) -> None:
        """Score the policy after round r on held-out items (families that have them)."""

    def _heldout_stats(self) -> list[dict]:
        return []

    # -- policy update --------------------------------------------------------------------
    def _sft(self, r: int, rdir: Path, pairs: list[dict]) -> dict:
        """LoRA SFT of the policy on the kept pairs (loss on the notes only); save the adapter."""
        from safetensors.torch import save_file

        cfg = self.config
        sft = InnerLoop(self.loaded, cfg.sft_lora)
        sft.reset(derive_seed(cfg.seed, "sft", r))
        texts = [(p["prompt"], p["completion"]) for p in pairs if p["completion"].strip()]
        info = {"n_pairs": len(texts)}
        if texts:
            info["loss_before"] = sft.loss_on(texts)
            stats = sft.train(texts, cfg.sft_train, seed=derive_seed(cfg.seed, "sft-order", r))
            info["loss_after"] = sft.loss_on(texts)
            info["train"] = stats.to_dict()
        state = {k: v.contiguous().cpu() for k, v in sft.adapter_state().items()}
        save_file(state, str(rdir / "policy_adapter.safetensors"))
        digest = hashlib.sha256((rdir / "policy_adapter.safetensors").read_bytes()).hexdigest()
        fingerprint = hashlib.sha256((self.fingerprint + digest).encode()).hexdigest()[:16]
        policy = {"round": r, "fingerprint": fingerprint, "parent_fingerprint": self.fingerprint,
                  "sft": info, "written": now_iso()}
        # policy.json marks the round finished; it is written last so a kill before it redoes SFT.
        write_json_atomic(rdir / "policy.json", policy)
        return policy

    def _apply_policy(self, rdir: Path) -> None:
        """Merge a finished round's adapter into the weights (same tensors -> same merged weights)."""
        from safetensors.torch import load_file

        policy = json.loads((rdir / "policy.json").read_text())
        sft = InnerLoop(self.loaded, self.config.sft_lora)
        sft.load_adapter_state(load_file(str(rdir / "policy_adapter.safetensors")))
        sft.merge_into_base()
        self.fingerprint = policy["fingerprint"]
        self.loaded.fingerprint = self.fingerprint
        self.loaded.name = f"{self.loaded.name}+seal-r{policy['round']}"

    def _write_summary(self) -> None:
        rounds = []
        for r in range(1, self.config.rounds + 1):
            path = self.folder.path / f"round_{r}" / "stats.json"
            if path.exists():
                rounds.append(json.loads(path.read_text()))
        heldout = self._heldout_stats()
        for entry in heldout:  # the per-round table (compare, plots) reads it from each round
            for rd in rounds:
                if rd["round"] == entry["round"]:
                    rd["heldout_accuracy"] = entry["accuracy"]
                    if "vs_round_0" in entry:
                        rd["heldout_vs_round_0"] = entry["vs_round_0"]
        summary = {"kind": self.resolved["kind"], "run_id": self.folder.path.name, "model": self.config.model,
                   "config": self.resolved, "rounds": rounds, "heldout": heldout,
                   "policy_fingerprint": self.fingerprint,
                   "complete": len(rounds) == self.config.rounds, "written": now_iso()}
        write_json_atomic(self.folder.path / "summary.json", summary)


class SealTrainer(OuterLoop):
    """ReST-EM for knowledge incorporation: notes per RL-pool passage, reward = adapted accuracy."""

    def __init__(self, config: RLConfig, reports_dir: str | Path = "reports", data: str | None = None,
                 progress: bool = True):
        super().__init__(progress)
        config.validate()
        if config.keep == "all-correct":
            raise ValueError("keep rule all-correct is for ARC; knowledge uses top1 or beats-passage")
        self.config = config
        self.data = data
        self.passages = knowledge.load_passages(config.split, data)[: config.n_passages]
        # Held-out passages come from SEAL's evaluation set (SQuAD dev), never from the RL pool.
        self.heldout = knowledge.seal_eval_passages(config.heldout_passages, data) if config.heldout_passages else []
        self.resolved = {"kind": "seal-rl", **asdict(config), "passage_ids": [p.id for p in self.passages],
                         "heldout_passage_ids": [p.id for p in self.heldout]}
        self.folder = RunFolder.for_config(reports_dir, f"seal-rl-{config.model}", self.resolved)
        from .grading import get_grader

        self.grader = get_grader(config.grader)

    def _score_samples(self, r: int, loop: InnerLoop) -> list[dict]:
        return self._rewards(r, loop, self._notes(r, loop))

    def _policy_prompt(self, loop: InnerLoop, item_id: str) -> str:
        passage = next(p for p in self.passages if p.id == item_id)
        return self._notes_prompt(loop, passage)

    def _notes_prompt(self, loop: InnerLoop, passage: Passage) -> str:
        return format_prompt(loop.tokenizer, knowledge.self_edit_prompt(passage, self.config.notes.prompt),
                             self.config.notes_style)

    def _notes(self, r: int, loop: InnerLoop) -> dict[str, dict]:
        """k notes per passage from the current policy, sampled in fixed seeded chunks (resumable)."""
        cfg, name = self.config, f"round_{r}/notes.jsonl"
        cached = self.folder.latest_by_key(name)
        spec = NotesSpec(**{**asdict(cfg.notes), "k": cfg.k})
        size = cfg.notes_batch_size
        chunks = [self.passages[i:i + size] for i in range(0, len(self.passages), size)]
        bar = _bar(len(self.passages), f"round {r} notes", self.progress)
        for c, chunk in enumerate(chunks):
            if all(f"{p.id}|{cfg.k - 1}" in cached for p in chunk):
                bar.update(len(chunk))
                continue
            start = time.perf_counter()
            texts = sample_self_notes(loop, chunk, spec, cfg.notes_style,
                                      seed=derive_seed(cfg.seed, "rl-notes", r, c), batch_size=size * cfg.k)
            per = (time.perf_counter() - start) / (len(chunk) * cfg.k)
            for p, comps in zip(chunk, texts):
                for j, text in enumerate(comps):
                    row = {"key": f"{p.id}|{j}", "passage_id": p.id, "sample": j, "text": text, "generate_s": per}
                    self.folder.append(name, row)
                    cached[row["key"]] = row
            bar.update(len(chunk))
        bar.close()
        return cached

    def _reward(self, loop: InnerLoop, passage: Passage, texts: list[str], key: str,
                repeats: int | None = None) -> tuple[float, list[float], dict]:
        """Mean adapted accuracy over `repeats` seeds (default: the config's) of training on `texts`."""
        cfg = self.config
        accs, seconds = [], {"train_s": 0.0, "answer_s": 0.0}
        prompts = [format_prompt(loop.tokenizer, knowledge.answer_prompt(passage, q), cfg.answer_style)
                   for q in passage.questions]
        for rep in range(repeats or cfg.repeats):
            seed = derive_seed(cfg.seed, key, rep)
            loop.reset(seed)
            try:
                stats = loop.train(texts, cfg.inner_train, seed=seed)
            except TrainingError:
                accs.append(0.0)  # a self-edit that breaks training earns nothing
                continue
            seconds["train_s"] += stats.seconds
            t = time.perf_counter()
            answers = loop.generate(prompts, cfg.max_answer_tokens)
            seconds["answer_s"] += time.perf_counter() - t
            verdicts = [self.grader.grade(q.question, q.answers, a) for q, a in zip(passage.questions, answers)]
            accs.append(sum(verdicts) / len(verdicts))
        return fmean(accs), accs, seconds

    def _rewards(self, r: int, loop: InnerLoop, notes: dict[str, dict]) -> list[dict]:
        cfg, name = self.config, f"round_{r}/samples.jsonl"
        done = self.folder.latest_by_key(name)
        todo = [(p, j) for p in self.passages if p.questions for j in range(cfg.k) if f"{p.id}|{j}" not in done]
        bar = _bar(len(self.passages) * cfg.k, f"round {r} rewards", self.progress)
        bar.update(len(self.passages) * cfg.k - len(todo))
        for p, j in todo:
            key = f"{p.id}|{j}"
            text = notes[key]["text"] or ""
            statements = knowledge.split_self_edit(text, cfg.notes.prompt)
            texts = knowledge.training_texts(p, [text], cfg.notes.prompt)
            reward, per_repeat, seconds = self._reward(loop, p, texts, f"r{r}|{key}")
            seconds["generate_s"] = notes[key]["generate_s"]
            row = {"key": key, "item_id": p.id, "passage_id": p.id, "sample": j, "text": text,
                   "n_statements": len(statements),
                   "reward": reward, "rewards": per_repeat, "seconds": seconds}
            self.folder.append(name, row)
            done[key] = row
            bar.update(1)
        bar.close()
        return [done[f"{p.id}|{j}"] for p in self.passages if p.questions for j in range(cfg.k)]

    def _baselines(self, r: int, loop: InnerLoop) -> dict[str, float]:
        name = f"round_{r}/baseline.jsonl"
        done = self.folder.latest_by_key(name)
        for p in self.passages:
            if p.questions and p.id not in done:
                reward, per_repeat, _ = self._reward(loop, p, knowledge.training_texts(p, []), f"r{r}|{p.id}|passage")
                row = {"key": p.id, "reward": reward, "rewards": per_repeat}
                self.folder.append(name, row)
                done[p.id] = row
        return {k: v["reward"] for k, v in done.items()}

    # -- held-out evaluation --------------------------------------------------------------
    def _evaluate_heldout(self, r: int) -> None:
        """Score the current policy on the held-out passages: one sampled note per passage, an
        adapter trained on note + passage, closed-book answers graded. The note's sampling seed and
        the adapter's seed depend on the passage only, so rounds differ only by the policy."""
        if not self.heldout:
            return
        cfg, name = self.config, f"round_{r}/heldout.jsonl"
        (self.folder.path / f"round_{r}").mkdir(exist_ok=True)
        done = self.folder.latest_by_key(name)
        todo = [p for p in self.heldout if p.questions and p.id not in done]
        if not todo:
            return
        loop = InnerLoop(self.loaded, cfg.inner_lora)
        spec = NotesSpec(**{**asdict(cfg.notes), "k": 1})
        bar = _bar(len(self.heldout), f"round {r} held-out", self.progress)
        bar.update(len(self.heldout) - len(todo))
        for p in todo:
            t = time.perf_counter()
            text = sample_self_notes(loop, [p], spec, cfg.notes_style, seed=derive_seed(cfg.seed, "heldout", p.id))[0][0]
            generate_s = time.perf_counter() - t
            reward, _, seconds = self._reward(loop, p, knowledge.training_texts(p, [text], cfg.notes.prompt),
                                              f"heldout|{p.id}", repeats=1)
            self.folder.append(name, {"key": p.id, "passage_id": p.id, "text": text, "accuracy": reward,
                                      "seconds": {**seconds, "generate_s": generate_s}})
            bar.update(1)
        bar.close()

    def _heldout_stats(self) -> list[dict]:
        """Per evaluated round: held-out accuracy (mean over passages, 95% CI) and Δ vs round 0."""
        out, first = [], None
        for r in range(0, self.config.rounds + 1):
            rows = self.folder.latest_by_key(f"round_{r}/heldout.jsonl")
            acc = {p.id: rows[p.id]["accuracy"] for p in self.heldout if p.id in rows}
            if not acc or len(acc) < len([p for p in self.heldout if p.questions]):
                continue
            entry = {"round": r, "accuracy": mean_ci(list(acc.values()), seed=self.config.seed)}
            if first is None:
                first = acc
            else:
                common = sorted(set(acc) & set(first))
                entry["vs_round_0"] = paired_difference([acc[k] for k in common], [first[k] for k in common],
                                                        seed=self.config.seed)
            out.append(entry)
        return out



def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def rl_table(summary: dict) -> str:
    lines = ["| round | samples | kept | mean reward (all) | mean reward (kept) | SFT loss before → after | policy |",
             "|---|---|---|---|---|---|---|"]
    for s in summary.get("rounds", []):
        sft = s.get("sft", {})
        loss = (f"{sft['loss_before']:.3f} → {sft['loss_after']:.3f}" if "loss_before" in sft else "–")
        lines.append(f"| {s['round']} | {s['n_samples']} | {s['n_kept']} | {fmt_ci(s['mean_reward_all'])} | "
                     f"{fmt_ci(s['mean_reward_kept'])} | {loss} | {s['policy_fingerprint']} |")
    heldout = summary.get("heldout") or []
    if heldout:
        lines += ["", "Held-out evaluation passages (one note from the policy per passage, adapter trained, "
                      "graded; round 0 = the starting model):", "",
                  "| after round | accuracy % [95% CI] | n passages | Δ vs round 0 (points) | p |", "|---|---|---|---|---|"]
        for h in heldout:
            d = h.get("vs_round_0")
            delta = f"{d['mean'] * 100:+.1f} [{d['ci_low'] * 100:+.1f}, {d['ci_high'] * 100:+.1f}]" if d else "–"
            p = f"{d['p_value']:.2f}" if d else "–"
            lines.append(f"| {h['round']} | {fmt_ci(h['accuracy'])} | {h['accuracy']['n']} | {delta} | {p} |")
    return "\n".join(lines) + "\n"


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="edit", disable=not enabled, dynamic_ncols=True)
