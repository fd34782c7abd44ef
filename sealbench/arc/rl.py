"""SEAL's outer loop for ARC (docs/DESIGN.md §3): the same `OuterLoop` as knowledge incorporation.

One round on the *training* tasks (SEAL: its 12 curated training tasks, 1 round):
  1. the current policy samples k JSON self-edit configs per task (demos only, never the test);
  2. each config drives its own TTT adapter on the policy; reward = 1 if the task's test input(s)
     are then solved, else 0 (invalid / over-budget configs: 0, not trained);
  3. keep every correct config (`all-correct`, SEAL's rule for ARC);
  4. LoRA SFT of the policy on (self-edit prompt -> kept config text), merged into the weights.

Artifacts per round (resumable per (task, sample)):
    round_1/self_edits.jsonl   the sampled configs (raw text)
    round_1/samples.jsonl      per sample: parse status, TTT stats, solved, reward, timings
    round_1/kept.jsonl, policy_adapter.safetensors, policy.json, stats.json   (as for knowledge)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..inner_loop import InnerLoop, LoRAConfig, TrainConfig, format_prompt, resolve_prompt_style
from ..rl import KEEP_RULES, OuterLoop, _bar
from ..runfolder import RunFolder, derive_seed
from . import data as D
from .self_edit import edit_prompt, parse_config
from .ttt import TTTSettings


@dataclass
class ArcRLConfig:
    model: str = "embedded"
    tasks: str = "seal-train"          # training task set: seal-train | mini-train | a challenges json
    n_tasks: int | None = None
    mini_rules: list[str] | None = None   # generated training tiers (mini-train): rules and input size
    mini_size: list[int] | None = None
    k: int = 5                         # configs sampled per task per round
    rounds: int = 1                    # SEAL: 1 round for ARC
    keep: str = "all-correct"
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    edit_style: str = "auto"           # self-edit prompt: chat template when the model has one
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 256
    edit_format: str = "free"          # free (SEAL) | guided (arc/guided.py)
    inner_lora: LoRAConfig = field(default_factory=LoRAConfig)   # the TTT adapter
    ttt: TTTSettings = field(default_factory=TTTSettings)
    sft_lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(r=64, alpha=128))
    sft_train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=3e-4, epochs=2))

    def validate(self) -> None:
        if self.keep not in KEEP_RULES or self.keep == "beats-passage":
            raise ValueError(f"ARC keep rule {self.keep!r} must be all-correct or top1")
        for name in ("k", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"ARC RL config: {name} must be >= 1 (got {getattr(self, name)})")


class ArcSealTrainer(OuterLoop):
    def __init__(self, config: ArcRLConfig, reports_dir: str | Path = "reports", data_dir: str | None = None,
                 progress: bool = True):
        super().__init__(progress)
        config.validate()
        self.config = config
        self.tasks = D.load_tasks(config.tasks, data_dir, config.n_tasks, config.seed, config.mini_rules,
                                  config.mini_size)
        if not self.tasks:
            raise D.ArcDataError(f"ARC RL task set {config.tasks!r} is empty")
        if any(t.test_outputs is None for t in self.tasks):
            raise D.ArcDataError(f"ARC RL task set {config.tasks!r} has tasks without solutions: no reward")
        self.by_id = {t.id: t for t in self.tasks}
        self.resolved = {"kind": "seal-rl-arc", **asdict(config), "task_ids": [t.id for t in self.tasks]}
        self.folder = RunFolder.for_config(reports_dir, f"seal-rl-arc-{Path(str(config.model)).name}",
                                           self.resolved)

    def _style(self, loop: InnerLoop) -> str:
        return resolve_prompt_style(loop.tokenizer, self.config.edit_style)

    def _policy_prompt(self, loop: InnerLoop, item_id: str) -> str:
        return format_prompt(loop.tokenizer, edit_prompt(self.by_id[item_id].train), self._style(loop))

    def _score_samples(self, r: int, loop: InnerLoop) -> list[dict]:
        from .run import evaluate_edit, sample_configs

        cfg = self.config
        edits_name, samples_name = f"round_{r}/self_edits.jsonl", f"round_{r}/samples.jsonl"
        edits = self.folder.latest_by_key(edits_name)
        bar = _bar(len(self.tasks), f"round {r} configs", self.progress)
        for t in self.tasks:  # one seed per task: resuming samples exactly what a straight run would
            if f"{t.id}|{cfg.k - 1}" not in edits:
                got = sample_configs(loop, [t], cfg.k, derive_seed(cfg.seed, "arc-rl", r, t.id), cfg.temperature,
                                     cfg.top_p, cfg.max_new_tokens, self._style(loop),
                                     edit_format=cfg.edit_format)[t.id]
                for i, s in enumerate(got):
                    row = {"key": f"{t.id}|{i}", "text": s["text"], "generate_s": s["generate_s"]}
                    self.folder.append(edits_name, row)
                    edits[row["key"]] = row
            bar.update(1)
        bar.close()
        done = self.folder.latest_by_key(samples_name)
        keys = [(t, i) for t in self.tasks for i in range(cfg.k)]
        bar = _bar(len(keys), f"round {r} TTT rewards", self.progress)
        for t, i in keys:
            key = f"{t.id}|{i}"
            if key not in done:
                start = time.perf_counter()
                rec = evaluate_edit(loop, t, parse_config(edits[key]["text"]), cfg.ttt,
                                    derive_seed(cfg.seed, "arc-rl-ttt", r, key))
                seconds = {k: v for k, v in rec["timing"].items()}
                seconds["generate_s"] = edits[key]["generate_s"]
                row = {"key": key, "item_id": t.id, "sample": i, "text": edits[key]["text"],
                       "edit_status": rec["edit_status"], "reason": rec["reason"], "config": rec["config"],
                       "n_ttt_examples": rec["n_ttt_examples"], "train": rec["train"],
                       "test_solved": rec["test_solved"], "solved": rec["solved"], "reward": rec["reward"],
                       "seconds": seconds, "wall_s": time.perf_counter() - start}
                self.folder.append(samples_name, row)
                done[key] = row
            bar.update(1)
        bar.close()
        return [done[f"{t.id}|{i}"] for t, i in keys]


def rl_config_for_run(config, contender) -> ArcRLConfig:
    """The RL config an ARC benchmark run trains its `seal` contender's policy with: the run's model,
    TTT settings and LoRA, the contender's sampling settings, on the training counterpart of the
    evaluation tasks (seal-eval -> seal-train, mini -> mini-train, disjoint by construction)."""
    tasks = config.rl_tasks or ("seal-train" if config.task == "seal_arc_fewshot" else "mini-train")
    return ArcRLConfig(model=config.model, tasks=tasks, n_tasks=config.rl_n_tasks, k=contender.k,
                       mini_rules=config.mini_rules, mini_size=config.mini_size,
                       seed=config.seed, device=config.device, dtype=config.dtype, edit_style=config.edit_style,
                       temperature=contender.temperature, top_p=contender.top_p,
                       max_new_tokens=contender.max_new_tokens, edit_format=config.edit_format,
                       inner_lora=replace(config.lora), ttt=config.ttt)
