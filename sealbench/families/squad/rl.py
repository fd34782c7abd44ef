"""What SEAL's RL loop (rl/loop.py) needs from the knowledge family: the 100-passage RL pool, the
"implications" prompt, sampled notes, the reward (the adapted model's accuracy on the passage's
questions: the same episode as every protocol, episode.py) and the held-out evaluation (one note
per SEAL evaluation passage from the current policy, adapted, graded)."""
from __future__ import annotations

from ...engine.generate import GenRequest
from ...engine.inner_loop import format_prompt
from ...grading import get_grader
from ..base import derive_seed, stable_hash
from .data import load_passages, seal_eval_passages
from .episode import AnswerSettings, EditError, Episode, build_texts, iter_episodes
from .prompts import self_edit_prompt


class SquadRL:
    def train_items(self, cfg, data_dir) -> list:
        """SEAL's RL pool (SQuAD train, 100 passages), the first n_items with questions."""
        pool = [p for p in load_passages("train", data_dir) if p.questions]
        if len(pool) < cfg.n_items:
            from .data import DataError

            raise DataError(f"n_items = {cfg.n_items}: the RL pool has only {len(pool)} passages with questions; "
                            f"lower --n-items (or n_items: in the RL preset) to at most {len(pool)}")
        return pool[: cfg.n_items]

    def heldout_items(self, cfg, data_dir) -> list:
        """SEAL's evaluation passages (never the RL pool), the first heldout_items."""
        return seal_eval_passages(cfg.heldout_items, data_dir) if cfg.heldout_items else []

    def prompt(self, item, cfg) -> str:
        return self_edit_prompt(item, cfg.prompt)

    def sample(self, engine, prompts: list[str], seeds: list[int], cfg) -> list[str]:
        return engine.generate([GenRequest(p, None, cfg.max_new_tokens, cfg.temperature, cfg.top_p, s)
                                for p, s in zip(prompts, seeds)])

    def reward(self, engine, batch: list[tuple], cfg, with_notes: bool = True) -> list[dict]:
        """[(passage, notes text, seed)] -> [{reward, details}] in order (see `reward_stream`)."""
        out = {}
        for done in self.reward_stream(engine, batch, cfg, with_notes):
            out.update(done)
        return [out[i] for i in range(len(batch))]

    def reward_stream(self, engine, batch: list[tuple], cfg, with_notes: bool = True):
        """Rewards of [(passage, notes text, seed)] as their episodes finish: yields lists of (index
        into batch, {reward: adapted accuracy, details}). The whole batch is one queue through the
        engine's slots (longest edits first). A self-edit is made into training sequences by the
        rule every run uses (`build_texts`: at most `max_statements` statements); an invalid one
        earns 0 with its reason in details.error and details.invalid set (the round never keeps
        it), a failed episode (e.g. a NaN loss) earns 0 with its reason."""
        episodes, invalid = [], set()
        for p, text, seed in batch:
            key = stable_hash([p.id, text, seed])
            try:
                texts, _ = build_texts([p], [[text] if with_notes else []], cfg.prompt, True, cfg.max_statements)
                episodes.append(Episode(key, [p], texts, seed))
            except EditError as err:
                invalid.add(len(episodes))
                episodes.append(Episode(key, [p], [], seed, error=str(err)))
        index = {id(e): i for i, e in enumerate(episodes)}
        answer = AnswerSettings(cfg.answer_style, cfg.max_answer_tokens, cfg.answer_stops)
        for done in iter_episodes(engine, episodes, cfg.inner, answer, get_grader(cfg.grader)):
            yield [(index[id(e)], {"reward": r.get("accuracy", 0.0) if r["status"] == "ok" else 0.0,
                                   "details": {"error": r["error"], "invalid": index[id(e)] in invalid,
                                               "train_s": r["timing"]["train_s"],
                                               "answer_s": r["timing"]["answer_s"]}}) for e, r in done]

    def baselines(self, engine, items: list, cfg, r: int) -> dict[str, float]:
        """Passage-only rewards (keep rule beats-passage), averaged over the same repeats."""
        batch = [(p, "", derive_seed(cfg.seed, "rl-baseline", r, p.id, rep)) for p in items for rep in range(cfg.repeats)]
        out = self.reward(engine, batch, cfg, with_notes=False)
        return {p.id: sum(x["reward"] for x in out[n * cfg.repeats:(n + 1) * cfg.repeats]) / cfg.repeats
                for n, p in enumerate(items)}

    def heldout(self, engine, items: list, cfg) -> list[dict]:
        """One note per held-out passage from the current policy (its seed depends on the passage
        only, so rounds differ only by the policy), an adapter on note + passage, graded."""
        prompts = [format_prompt(engine.tokenizer, self.prompt(p, cfg), cfg.notes_style) for p in items]
        texts = self.sample(engine, prompts, [derive_seed(cfg.seed, "heldout", p.id) for p in items], cfg)
        scored = self.reward(engine, [(p, t, derive_seed(cfg.seed, "heldout-adapter", p.id)) for p, t in zip(items, texts)], cfg)
        return [{"key": p.id, "text": t, "accuracy": s["reward"], "details": s["details"]}
                for p, t, s in zip(items, texts, scored)]
