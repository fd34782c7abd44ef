"""The knowledge-incorporation family object (the `Family` contract, families/base.py). Its facts
(name, tasks, grader) are declared in __init__.py, which config and the reports read."""
from __future__ import annotations

from ...engine.generate import GenRequest
from ...engine.train import encode
from ...schema import eval_set_id
from ..base import Work
from . import NAME, metrics, protocols
from .continual import run_sequences
from .data import DataError, seal_eval_passages
from .episode import AnswerSettings, EditError, Episode, build_texts, iter_episodes
from .prompts import self_edit_prompt, training_texts
from .rl import SquadRL


class SquadFamily:
    name = NAME
    item_noun = "passages"
    rl = SquadRL()

    def load_items(self, config) -> tuple[list, str]:
        """SEAL's evaluation passages (the first n_passages) and the evaluation set's id."""
        n = config.n_passages
        passages = seal_eval_passages(n, config.data_dir)
        if len(passages) < n and config.protocol == "cpt":
            raise DataError(f"--cpt-n {n}: the data has only {len(passages)} evaluation passages; lower --cpt-n")
        if len(passages) < n:
            raise DataError(f"n_passages = {n} asked, but the data has only {len(passages)} evaluation passages")
        # by content (id@digest, as ARC): the same ids with other golds are another evaluation set
        return passages, eval_set_id("seal-eval", [f"{p.id}@{p.digest}" for p in passages])

    def plan(self, config, contenders, items, sources, fingerprints):
        return protocols.plan(config, contenders, items, sources, fingerprints)

    def describe_items(self, config, items) -> str:
        """What the run evaluates, for headers: continual draws K x S from the pool."""
        if config.protocol == "continual":
            return (f"{config.sequences} sequences x {config.steps} passages drawn from the first {len(items)} "
                    "evaluation passages")
        return f"{len(items)} passages"

    def plan_notes(self, config, contenders) -> list[str]:
        """Lines a run and a dry run print about contenders the protocol plans differently."""
        if config.protocol != "continual":
            return []
        idle = [c.name for c in contenders if not c.adapt]
        return [f"continual: {', '.join(idle)} adapt(s) nothing, so no units are planned for them; the model "
                "before any edit is row 0 of every sequence's matrix"] if idle else []

    def edit_prompt(self, contender, item) -> str:
        return self_edit_prompt(item, contender.prompt)

    def sample_edits(self, engine, contender, prompts: list[str], seeds: list[int], config) -> list[str]:
        """Sampled notes (temperature / top-p from the contender) from the engine's base weights."""
        max_new = config.notes_max_tokens or contender.max_new_tokens
        return engine.generate([GenRequest(p, None, max_new, contender.temperature, contender.top_p, s)
                                for p, s in zip(prompts, seeds)])

    def run(self, engine, units: list, edits: dict, config, grader) -> list[dict]:
        """Rows for a batch of units, in order; `edits[unit key]` lists (EditRef, edit row) in the
        unit's order."""
        rows = {}
        for done, out in self.stream(engine, units, edits, config, grader):
            rows.update((u.key, row) for u, row in zip(done, out))
        return [rows[u.key] for u in units]

    def stream(self, engine, units: list, edits: dict, config, grader):
        """(units, their rows) as units finish, for any number of units: single and cpt episodes go
        through the engine as one queue (slots reused as edits finish, episode.py); continual runs
        K sequences at a time (each merges its edits in order)."""
        if config.protocol == "continual":
            for i in range(0, len(units), engine.k):
                batch = units[i:i + engine.k]
                notes = {(u.key, ref.item_id): row["text"] if not row.get("error") else None
                         for u in batch for ref, row in edits.get(u.key, [])}
                yield batch, self._stamp(batch, run_sequences(engine, batch, notes, config, grader), edits)
            return
        episodes = [self._episode(u, edits.get(u.key, []), config) for u in units]
        unit_of = {id(e): u for e, u in zip(episodes, units)}
        answer = AnswerSettings(config.answer_style, config.max_answer_tokens, config.answer_stops)
        for done in iter_episodes(engine, episodes, config.train_settings(), answer, grader):
            batch = [unit_of[id(e)] for e, _ in done]
            yield batch, self._stamp(batch, [row for _, row in done], edits)

    @staticmethod
    def _stamp(units: list, rows: list[dict], edits: dict) -> list[dict]:
        for u, row in zip(units, rows):
            pairs = edits.get(u.key, [])
            row.update(contender=u.contender.name, **u.info, passage_ids=[p.id for p in u.items], seed=u.seed,
                       self_edits=[r.get("text") for _, r in pairs])
            row.setdefault("timing", {})["generate_s"] = sum(r.get("generate_s") or 0.0 for _, r in pairs)
        return rows

    def _episode(self, u, pairs: list, config) -> Episode:
        c = u.contender
        if not c.adapt:
            return Episode(u.key, u.items, None, u.seed, with_context=c.answer_with_context)
        by_passage = {p.id: [] for p in u.items}
        error = next((r["error"] for _, r in pairs if r.get("error")), None)
        for ref, row in pairs:
            by_passage[ref.item_id].append(row.get("text"))
        try:
            texts, _ = build_texts(u.items, [by_passage[p.id] for p in u.items], c.prompt, c.include_passage,
                                   config.max_statements)
        except EditError as err:
            texts, error = [], error or str(err)
        return Episode(u.key, u.items, texts, u.seed, error=error)

    def summarize(self, config, plan, rows, common):
        return metrics.summarize(config, plan, rows, common)

    # ------------------------------------------------------------------ cost model (estimate.py)
    def workload(self, u, config, tokenizer, sources):
        """What a unit asks of the engine: its training sequence lengths (known self-edits are
        tokenised; sampled ones are assumed to fill their token budget in ~24-token lines)."""
        c = u.contender
        questions = sum(len(p.questions) for p in u.items)
        if not c.adapt:
            return Work([], None, [], questions)
        budget = config.notes_max_tokens or c.max_new_tokens
        train = config.train_settings()

        def lengths(texts):  # as the engine trains them (engine/train.py `encode`: cut, EOS added)
            return [len(ids) for ids, _ in encode(tokenizer, texts, train.max_length)]

        seqs = []
        for p in (u.items[:1] if config.protocol == "continual" else u.items):
            seqs += lengths(training_texts(p, [], include_passage=c.include_passage))
            for ref in [r for r in u.edits if r.item_id == p.id]:
                known = sources.known_text(c, p, ref.index)
                if known is None:
                    seqs += [24 + len(tokenizer(p.title)["input_ids"])] * max(1, budget // 24)
                else:
                    seqs += lengths(training_texts(p, [known], c.prompt, False))
        if config.protocol == "continual":
            k = config.steps
            return Work(seqs, train, [], questions // max(k, 1) * (k + k * (k + 1) // 2), steps=k)
        return Work(seqs, train, [], questions)

    def calibration_prompts(self, items, config, tokenizer) -> list[str]:
        from ...engine.inner_loop import format_prompt
        from .prompts import answer_prompt

        return [format_prompt(tokenizer, answer_prompt(p, q), config.answer_style) for p in items for q in p.questions]

    def answer(self, engine, prompts: list[str], config) -> list[str]:
        answer = AnswerSettings(config.answer_style, config.max_answer_tokens, config.answer_stops)
        return engine.generate([GenRequest(x, None, answer.max_tokens) for x in prompts], stop_strings=list(answer.stops))


FAMILY = SquadFamily()
__all__ = ["FAMILY", "DataError"]
