"""ARC TTT and THE episode: leave-out data, caps, output-token masking through the engine's
encoding, voting, prediction mapping back, edit statuses, and batched episodes equal to
one-at-a-time. (The real model learning a puzzle it cannot solve in context: test_arc_run.py.)"""
from __future__ import annotations

import pytest

from sealbench.config import SEAL_ARC_LORA, LoRASettings, TTTSettings
from sealbench.engine.inner_loop import Engine
from sealbench.families.arc import augment as A
from sealbench.families.arc.data import mini_task
from sealbench.families.arc.episode import ArcEpisode, run_episodes
from sealbench.families.arc.grids import parse_grid
from sealbench.families.arc.self_edit import ArcEditConfig, ParsedEdit, parse_config
from sealbench.families.arc.ttt import (TTTExample, build_ttt_data, leave_out_tasks, prediction_prompts,
                                        prediction_requests, score, tally, token_lengths, ttt_texts, vote)

G1, G2, G3 = ((1, 0),), ((2, 0),), ((3, 0),)
DEMOS = [(G1, A.flip_lr(G1)), (G2, A.flip_lr(G2)), (G3, A.flip_lr(G3))]


def edit(cfg: ArcEditConfig) -> ParsedEdit:
    return ParsedEdit(raw=cfg.to_text(), status="ok", config=cfg)


def test_leave_out_tasks():
    tasks = leave_out_tasks(DEMOS, (1, 2))
    leave1 = [t for t in tasks if t[2] == 1]
    leave2 = [t for t in tasks if t[2] == 2]
    assert len(leave1) == 3 and all(len(kept) == 2 and q not in kept for kept, q, _ in leave1)
    assert len(leave2) == 6 and all(len(kept) == 1 for kept, _, _ in leave2)
    assert leave_out_tasks(DEMOS[:2], (1, 2)) == [([DEMOS[1]], DEMOS[0], 1), ([DEMOS[0]], DEMOS[1], 1)]


def test_ttt_data_augments_dedups_and_caps(tiny):
    s = TTTSettings(permute_colors=False, permute_order=False, cap=1000)
    plain = build_ttt_data(DEMOS, [A.IDENTITY], s)
    assert len(plain) == 9 and {e.transform for e in plain} == {"identity"}
    assert plain[0].prompt.endswith(" -> ") and plain[0].answer.endswith("#")
    basic = build_ttt_data(DEMOS, A.transforms_for(basic=True), s)
    assert len(basic) > len(plain) and len({e.text for e in basic}) == len(basic)   # deduplicated
    perm = build_ttt_data(DEMOS, [A.IDENTITY], TTTSettings(cap=1000), seed=1)
    assert any(e.permuted for e in perm) and len(perm) <= 18
    capped = build_ttt_data(DEMOS, A.transforms_for(True, True, True, True), TTTSettings(cap=20), seed=3)
    assert len(capped) == 20
    again = build_ttt_data(DEMOS, A.transforms_for(True, True, True, True), TTTSettings(cap=20), seed=3)
    assert [e.text for e in capped] == [e.text for e in again]                        # deterministic
    # a transform that makes a grid over 30x30 drops that example
    g = tuple(tuple([1] * 16) for _ in range(12))
    big = [(g, g), (g, A.flip_ud(g))]
    assert {e.transform for e in build_ttt_data(big, A.transforms_for(size=True), s)} == {
        "identity", "double_height"}  # 24x16 fits; 24x32 and 12x32 do not
    for e in basic:
        assert parse_grid(e.answer) is not None
    # max_length (tokens, as trained: prompt + answer + EOS) drops long examples before the cap
    lengths = token_lengths(tiny.tokenizer, plain)
    limit = sorted(lengths)[4]
    short = build_ttt_data(DEMOS, [A.IDENTITY], s.updated(max_length=max(limit, 64)), tokenizer=tiny.tokenizer)
    assert all(n <= max(limit, 64) for n in token_lengths(tiny.tokenizer, short))


def test_a_task_with_no_pseudo_tasks_has_no_token_lengths(tiny):
    """The --dry-run workload of a task whose demos leave no TTT examples (paper preset, mini tier)."""
    assert build_ttt_data(DEMOS[:1], [A.IDENTITY], TTTSettings(leave=(1,))) == []
    assert token_lengths(tiny.tokenizer, []) == []


def test_output_token_masking_through_the_engine_encoding(tiny):
    """TTT texts as the engine encodes them: prompt and answer tokenised apart (as at prediction),
    EOS appended, the prompt out of the loss for output-token training, in it for all-token."""
    from sealbench.engine.train import encode

    tok = tiny.tokenizer
    ex = [TTTExample("[1 2] -> [2 1]#\n[3 4] -> ", "[4 3]#", "identity", 1),
          TTTExample("[5] -> ", "[5]#", "identity", 1)]
    for (ids, n_context), e in zip(encode(tok, ttt_texts(ex, output_only=True), 2048), ex):
        prompt = tok(e.prompt)["input_ids"]
        answer = tok(e.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ids == prompt + answer and n_context == len(prompt)
        assert tok.decode(answer[:-1]) == e.answer
    assert [n for _, n in encode(tok, ttt_texts(ex, output_only=False), 2048)] == [0, 0]
    assert token_lengths(tok, ex) == [len(ids) for ids, _ in encode(tok, ttt_texts(ex, True), 2048)]


def test_vote_picks_the_majority():
    a, b, c = ((1,),), ((2,),), ((3,),)
    assert vote([b, a, a, None, c, a, b]) == [a, b]
    assert vote([c, b, None]) == [c, b]                 # tie: first seen wins
    assert vote([None, None]) == []
    assert vote([a, a, b, b, c], n_attempts=1) == [a]


def test_prediction_prompts_and_inverse_mapping():
    q = ((1, 2), (3, 4))
    prompts = prediction_prompts(DEMOS, q, [A.IDENTITY, A.BY_NAME["rot90"]], leave_one_out=True)
    assert len(prompts) == 2 * (1 + 3)
    truth = A.flip_lr(q)
    back = [t.inverse(t(truth)) for _, t in prompts]
    assert vote(back) == [truth]
    assert prompts[4][1].name == "rot90" and prompts[4][0].endswith("[3 1]\n[4 2] -> ")


def test_tally_maps_answers_back_and_votes():
    """A model that answers perfectly in every transformed frame votes the true answer back."""
    q = ((1, 2), (3, 4))
    s = TTTSettings(predict_transforms=("identity", "rot90", "flip_ud"))
    reqs = prediction_requests(DEMOS, [q, q], s)
    assert len(reqs) == 2 * 3 * 4 and [r[1] for r in reqs[:12]] == [0] * 12
    from sealbench.families.arc.grids import answer_text
    texts = [answer_text(t(A.flip_lr(q))) if i % 3 else "garbage" for i, (_, _, t) in enumerate(reqs)]
    preds = tally(reqs, texts, 2, 2, 40)
    assert preds[0]["attempts"] == [[[2, 1], [4, 3]]] and preds[0]["n_parsed"] == 8 and preds[0]["n_prompts"] == 12
    assert score(preds, [A.flip_lr(q)] * 2) == {"test_solved": [True, True], "solved": True}


def test_score_two_attempts_and_all_test_inputs():
    right, wrong = ((1,),), ((2,),)
    preds = [{"attempts": [[[2]], [[1]]]}, {"attempts": [[[1]]]}]
    assert score(preds, [right, right]) == {"test_solved": [True, True], "solved": True}
    assert score(preds, [right, wrong])["solved"] is False
    assert score([{"attempts": []}], [right])["test_solved"] == [False]


def test_episode_statuses(tiny):
    """invalid and over-budget edits are recorded, not trained; a NaN loss is a train_error."""
    from sealbench.engine.models import tiny_random_model

    model = tiny_random_model(seed=3, vocab_from=tiny)
    task = mini_task("flip_lr", 1)
    s = TTTSettings(cap=4, step_budget=4, predict_transforms=("identity",), leave_one_out_prompts=False,
                    max_new_tokens=16)
    cfgs = [parse_config("no json"), edit(ArcEditConfig(num_train_epochs=3)),   # 3 x 4 / 2 = 6 > 4
            edit(ArcEditConfig(learning_rate=0.1, num_train_epochs=2)), None]
    with Engine(model, LoRASettings(r=4, alpha=8), n_slots=2) as engine:
        rows = run_episodes(engine, [ArcEpisode(str(i), task, c, 7) for i, c in enumerate(cfgs)], s)
    assert [r["edit_status"] for r in rows[:2]] == ["invalid", "over_budget"]
    assert "6 steps > budget 4" in rows[1]["reason"] and rows[1]["n_ttt_examples"] == 4
    assert rows[0]["train"] is None and rows[1]["train"] is None and rows[0]["predictions"] is None
    assert rows[2]["edit_status"] in ("ok", "train_error") and rows[2]["train"]["steps"] >= 1
    assert rows[3]["edit_status"] == "icl" and rows[3]["predictions"][0]["n_prompts"] == 1
    assert all(r["status"] == "ok" and r["reward"] == float(r["solved"]) for r in rows)


def test_k_edits_in_one_batch_equal_one_at_a_time(tiny):
    """Three edits (different tasks, configs, seeds) trained and answered together give the same
    losses and the same predictions as each alone (tiny model, fp32)."""
    from sealbench.engine.models import tiny_random_model

    model = tiny_random_model(seed=4, vocab_from=tiny)
    s = TTTSettings(cap=6, predict_transforms=("identity", "flip_lr"), max_new_tokens=24)
    eps = [ArcEpisode("a", mini_task("flip_lr", 2), edit(ArcEditConfig(True, learning_rate=3e-3)), 1),
           ArcEpisode("b", mini_task("color_map", 3), edit(ArcEditConfig(strategy="train_using_all_tokens",
                                                                         learning_rate=1e-3, num_train_epochs=3)), 2),
           ArcEpisode("c", mini_task("rot180", 4), None, 3),
           ArcEpisode("d", mini_task("transpose", 5), edit(ArcEditConfig(False, True, learning_rate=2e-3)), 4)]
    with Engine(model, LoRASettings(r=8, alpha=16, targets=SEAL_ARC_LORA), n_slots=3) as engine:
        together = run_episodes(engine, eps, s, keep_completions=True)
        alone = [run_episodes(engine, [e], s, keep_completions=True)[0] for e in eps]
    assert [r["timing"]["batch_edits"] for r in together] == [3] * 4
    for t, a in zip(together, alone):
        assert t["predictions"] == a["predictions"] and t["edit_status"] == a["edit_status"]
        if a["train"]:
            assert t["train"]["steps"] == a["train"]["steps"]
            assert t["train"]["epoch_losses"] == pytest.approx(a["train"]["epoch_losses"], rel=1e-4)
