"""What SEAL's RL loop (rl/loop.py) needs from the ARC family (SEAL §4.2, docs/design.md §3).

SEAL's ARC setting: one ReST-EM round on the *training* tasks (its 12 curated training tasks;
`mini-train`, generated from seeds disjoint from the evaluation tier, for `seal_arc_mini`); the
policy samples k self-edit configs per task from the demos only; each config runs THE episode
(episode.py: parse, TTT data, budget, an adapter, voting); reward 1.0 if the task's test inputs are
then solved, else 0 (invalid, over-budget and failed edits: 0, never trained); keep rule
`all-correct` (every solving config is kept); the policy is fine-tuned on (prompt -> config text).
ARC has no passage-only baseline (`beats-passage` is a knowledge rule) and no held-out items.
"""
from __future__ import annotations

from .data import load_tasks, scorable
from .episode import ArcEpisode, run_episodes
from .guided import sample_edit_texts
from .self_edit import edit_prompt, parse_config


def rl_task_set(cfg) -> str:
    """The RL training set: `train_tasks`, else seal-train (seal_arc_fewshot) / mini-train (seal_arc_mini)."""
    return cfg.train_tasks or ("seal-train" if cfg.task == "seal_arc_fewshot" else "mini-train")


class ArcRL:
    def train_items(self, cfg, data_dir) -> list:
        """The first `n_items` training tasks. Raises ArcDataError when the set is empty or a task has
        no solutions (no reward without them)."""
        spec = rl_task_set(cfg)
        return scorable(load_tasks(spec, data_dir, cfg.n_items, cfg.seed, cfg.mini_rules, cfg.mini_size)[: cfg.n_items],
                        spec)

    def heldout_items(self, cfg, data_dir) -> list:
        return []

    def prompt(self, item, cfg) -> str:
        """The raw self-edit prompt: the demos only, never a test input (the loop formats it)."""
        return edit_prompt(item.train)

    def sample(self, engine, prompts: list[str], seeds: list[int], cfg) -> list[str]:
        return sample_edit_texts(engine, prompts, seeds, cfg.edit_format, cfg.temperature, cfg.top_p,
                                 cfg.max_new_tokens)

    def reward(self, engine, batch: list[tuple], cfg) -> list[dict]:
        """[(task, config text, seed)] -> [{reward: 1.0 solved else 0.0, details}], one batch of
        episodes through the engine (at most engine.k of them train)."""
        episodes = [ArcEpisode(f"rl|{task.id}|{n}", task, parse_config(text), seed)
                    for n, (task, text, seed) in enumerate(batch)]
        rows = run_episodes(engine, episodes, cfg.ttt)
        return [{"reward": r["reward"] if r["status"] == "ok" else 0.0,
                 "details": {k: r[k] for k in ("status", "error", "edit_status", "reason", "config", "n_ttt_examples",
                                               "test_solved", "solved", "timing")}
                 | {"train_steps": (r["train"] or {}).get("steps", 0)}} for r in rows]

    def baselines(self, engine, items: list, cfg, r: int) -> dict[str, float]:
        raise ValueError("keep rule beats-passage is not available for ARC (no passage-only baseline); "
                         "use all-correct (SEAL) or top1")

    def heldout(self, engine, items: list, cfg) -> list[dict]:
        return []  # ARC's RL run has no held-out items (heldout_items is empty)
