"""THE ARC episode, batched (docs/design.md §1b; SEAL §4.2 few-shot ARC): a self-edit becomes TTT data, an
adapter is trained on it, the adapted model answers the test input(s) by voting, the answer is
scored exactly. The benchmark run (family.run), the SEAL RL reward (rl.py) and the tests all call
`run_episodes`, so an edit means one procedure everywhere.

For a batch of episodes (at most `engine.k` of them train):
  1. each self-edit is parsed as data (self_edit.parse_config, never eval); an invalid one is
     recorded `invalid` with its reason and not trained (SEAL: reward 0);
  2. TTT data is built per valid edit (ttt.build_ttt_data, seeded by the episode's seed) and SEAL's
     budget is checked: epochs x examples / batch > step_budget => `over_budget`, not trained;
  3. every remaining edit trains its own LoRA adapter, all together in ONE `engine.train` call
     (engine/train.py: each edit exactly as alone; lr and epochs from the edit, batch size,
     max_length and schedule from TTTSettings); a non-finite loss => `train_error`;
  4. every episode's voting prompts (ttt.prediction_requests) go to ONE `engine.generate` call
     (greedy, BOS added, stop at "#", per-row max_new_tokens = ttt.answer_budget), each row through
     its edit's adapter slot (`icl`: slot None, the frozen model), then votes and scores.

One row per episode: {status (ok | failed), error, edit_status (icl | ok | invalid | over_budget |
train_error), reason, config, warnings, n_ttt_examples, train (TrainStats dict), predictions (per
test input: attempts, votes, completions — the first 2 unless keep_completions), test_solved,
solved, reward (1.0 solved, else 0.0), timing {data_s, train_s (the edit's share of the batch),
answer_s (its share of the prediction time, by prompts), batch_edits, peak_mem_mb}}.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ...config import TrainSettings, TTTSettings
from ...engine.generate import GenRequest
from ...engine.inner_loop import Engine, peak_memory_mb
from ...engine.train import EditJob
from .data import ArcTask
from .grids import END
from .self_edit import ParsedEdit, check_budget
from .ttt import answer_budget, build_ttt_data, prediction_requests, score, tally, transforms_of, ttt_texts

KEPT_COMPLETIONS = 2   # raw completions kept per test input unless keep_completions


@dataclass
class ArcEpisode:
    key: str
    task: ArcTask
    edit: ParsedEdit | None       # None: in-context only (icl), no training
    seed: int                     # TTT data sampling, adapter init and data order
    error: str | None = None      # the self-edit could not be produced: the unit fails with this
    row: dict = field(default_factory=dict)


def new_row(ep: ArcEpisode) -> dict:
    edit = ep.edit
    return {"status": "ok", "error": None, "edit_status": "icl" if edit is None else edit.status,
            "reason": None if edit is None else edit.reason,
            "config": edit.config.to_dict() if edit is not None and edit.config else None,
            "warnings": list(edit.warnings) if edit is not None else [], "n_ttt_examples": 0,
            "train": None, "predictions": None, "test_solved": [False] * len(ep.task.test_inputs), "solved": False,
            "reward": 0.0,
            "timing": {"data_s": 0.0, "train_s": 0.0, "answer_s": 0.0}}


def prepare(engine: Engine, ep: ArcEpisode, ttt: TTTSettings) -> EditJob | None:
    """Steps 1-2 for one episode: its row, and the training job when the edit is to be trained."""
    row = ep.row = new_row(ep)
    if ep.error:
        row.update(status="failed", error=ep.error)
        return None
    if ep.task.test_outputs is None:
        row.update(status="failed", error=f"task {ep.task.id} has no solutions: it cannot be scored")
        return None
    if ep.edit is None or not ep.edit.valid:
        return None
    start = time.perf_counter()
    examples = build_ttt_data(ep.task.train, transforms_of(ep.edit.config), ttt, seed=ep.seed,
                              tokenizer=engine.tokenizer)
    row["timing"]["data_s"] = time.perf_counter() - start
    row["n_ttt_examples"] = len(examples)
    if not examples:
        row.update(edit_status="invalid", reason=f"no TTT example fits max_length ({ttt.max_length} tokens)")
        return None
    check_budget(ep.edit, len(examples), ttt.step_budget, ttt.batch_size)   # SEAL: epochs x n / 2 > 375
    row.update(edit_status=ep.edit.status, reason=ep.edit.reason)
    if not ep.edit.valid:
        return None
    cfg = ep.edit.config
    settings = TrainSettings(learning_rate=cfg.learning_rate, epochs=cfg.num_train_epochs,
                             batch_size=ttt.batch_size, max_length=ttt.max_length, lr_schedule=ttt.lr_schedule)
    return EditJob(ttt_texts(examples, cfg.output_tokens_only), settings, ep.seed)


def run_episodes(engine: Engine, episodes: list[ArcEpisode], ttt: TTTSettings,
                 keep_completions: bool = False) -> list[dict]:
    """Rows for `episodes` (module doc), in order. Raises ValueError when more than `engine.k`
    episodes need training."""
    jobs = {i: job for i, ep in enumerate(episodes) if (job := prepare(engine, ep, ttt)) is not None}
    stats = engine.train(list(jobs.values()))
    slot = {}
    for s, (i, st) in enumerate(zip(jobs, stats)):
        row = episodes[i].row
        row["train"], row["timing"]["train_s"] = st.to_dict(), st.seconds
        if st.error:
            row.update(edit_status="train_error", reason=st.error)
        else:
            slot[i] = s
    requests, owners, budgets = [], [], {}
    for i, ep in enumerate(episodes):
        if ep.row["status"] != "ok" or ep.row["edit_status"] not in ("icl", "ok"):
            continue
        budgets[i] = answer_budget(engine.tokenizer, ep.task.train, ttt.max_new_tokens)
        for prompt, ti, t in prediction_requests(ep.task.train, ep.task.test_inputs, ttt):
            requests.append(GenRequest(prompt, slot.get(i), budgets[i]))
            owners.append((i, prompt, ti, t))
    start = time.perf_counter()
    texts = engine.generate(requests, stop_strings=[END], add_special_tokens=True)
    answer_s = time.perf_counter() - start
    peak = round(peak_memory_mb(engine.device), 1)
    for i, ep in enumerate(episodes):
        row = ep.row
        mine = [(o[1:], text) for o, text in zip(owners, texts) if o[0] == i]
        row["timing"].update(answer_s=answer_s * len(mine) / max(len(requests), 1), batch_edits=len(jobs),
                             peak_mem_mb=peak)
        if i not in budgets:
            continue
        preds = tally([m[0] for m in mine], [m[1] for m in mine], len(ep.task.test_inputs), ttt.n_attempts,
                      budgets[i])
        s = score(preds, ep.task.test_outputs)
        if not keep_completions:
            for p in preds:
                p["completions"] = p["completions"][:KEPT_COMPLETIONS]
        row.update(predictions=preds, test_solved=s["test_solved"], solved=s["solved"], reward=float(s["solved"]))
    return [ep.row for ep in episodes]
