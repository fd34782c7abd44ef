"""ARC TTT: leave-out data, caps, output-token masking, voting, prediction mapping back, real learning."""
from __future__ import annotations

import pytest
import torch

from sealbench.arc import augment as A
from sealbench.arc.data import mini_task
from sealbench.arc.grids import answer_text, parse_grid
from sealbench.arc.self_edit import ArcEditConfig
from sealbench.arc.ttt import (TTTExample, TTTSettings, build_ttt_data,
                               leave_out_tasks, prediction_prompts, score, vote)

G1, G2, G3 = ((1, 0),), ((2, 0),), ((3, 0),)
DEMOS = [(G1, A.flip_lr(G1)), (G2, A.flip_lr(G2)), (G3, A.flip_lr(G3))]


def test_leave_out_tasks():
    tasks = leave_out_tasks(DEMOS, (1, 2))
    leave1 = [t for t in tasks if t[2] == 1]
    leave2 = [t for t in tasks if t[2] == 2]
    assert len(leave1) == 3 and all(len(kept) == 2 and q not in kept for kept, q, _ in leave1)
    assert len(leave2) == 6 and all(len(kept) == 1 for kept, _, _ in leave2)
    assert leave_out_tasks(DEMOS[:2], (1, 2)) == [([DEMOS[1]], DEMOS[0], 1), ([DEMOS[0]], DEMOS[1], 1)]


def test_ttt_data_augments_dedups_and_caps():
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
    # every answer is a well-formed grid whose inverse is consistent with the rule
    for e in basic:
        assert parse_grid(e.answer) is not None


def test_output_token_masking(tiny):
    """TTT texts through the real inner-loop encoding: prompt masked (output-only) or not."""
    from sealbench.inner_loop import InnerLoop, LoRAConfig
    from sealbench.arc.ttt import ttt_texts
    from sealbench.models import tiny_random_model

    loop = InnerLoop(tiny_random_model(seed=2, vocab_from=tiny), LoRAConfig(r=4, alpha=8))
    tok = loop.tokenizer
    ex = [TTTExample("[1 2] -> [2 1]#\n[3 4] -> ", "[4 3]#", "identity", 1),
          TTTExample("[5] -> ", "[5]#", "identity", 1)]
    seqs = loop._encode(ttt_texts(ex, output_only=True), 2048)
    ids, att, labels = loop._batch(seqs)
    for i, (full, n_prompt) in enumerate(seqs):
        prompt = tok(ex[i].prompt)["input_ids"]
        answer = tok(ex[i].answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert full == prompt + answer and n_prompt == len(prompt)      # tokenised apart, as at prediction
        n = len(full)
        assert (labels[i, :n_prompt] == -100).all()                       # prompt masked
        assert labels[i, n_prompt:n].tolist() == answer                   # answer + EOS in the loss
        assert (labels[i, n:] == -100).all() and (att[i, n:] == 0).all()  # padding masked
        assert tok.decode(answer[:-1]) == ex[i].answer
    all_seqs = loop._encode(ttt_texts(ex, output_only=False), 2048)
    _, _, all_labels = loop._batch(all_seqs)
    assert all_labels[0, :len(all_seqs[0][0])].tolist() == all_seqs[0][0]
    assert (all_labels[1, len(all_seqs[1][0]):] == -100).all()


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
    # a model that answers perfectly in every transformed frame votes the true answer back
    truth = A.flip_lr(q)
    back = [t.inverse(t(truth)) for _, t in prompts]
    assert vote(back) == [truth]
    assert prompts[4][1].name == "rot90" and prompts[4][0].endswith("[3 1]\n[4 2] -> ")


def test_score_two_attempts_and_all_test_inputs():
    right, wrong = ((1,),), ((2,),)
    preds = [{"attempts": [[[2]], [[1]]]}, {"attempts": [[[1]]]}]
    assert score(preds, [right, right]) == {"test_solved": [True, True], "solved": True}
    assert score(preds, [right, wrong])["solved"] is False
    assert score([{"attempts": []}], [right])["test_solved"] == [False]


@pytest.mark.slow
def test_real_model_ttt_goes_from_wrong_to_right(embedded):
    """The embedded SmolLM2-135M cannot solve a 3x3 colour-map puzzle in context; after TTT it can."""
    from sealbench.arc.run import evaluate_edit
    from sealbench.arc.self_edit import ParsedEdit
    from sealbench.inner_loop import InnerLoop, LoRAConfig

    task = mini_task("color_map", 1, n_demos=2, size=(3, 3))
    loop = InnerLoop(embedded, LoRAConfig(r=16, alpha=32, target_modules=(
        "q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")))
    s = TTTSettings(cap=12, step_budget=100, predict_transforms=("identity", "flip_lr", "rot180", "transpose"),
                    max_new_tokens=64)
    before = evaluate_edit(loop, task, None, s, seed=0)
    assert before["edit_status"] == "icl" and not before["solved"]
    cfg = ArcEditConfig(True, False, False, False, "train_using_output_tokens", 2e-3, 3)
    after = evaluate_edit(loop, task, ParsedEdit(raw="", status="ok", config=cfg), s, seed=0)
    assert after["edit_status"] == "ok" and after["train"]["steps"] == 18
    assert after["train"]["epoch_losses"][-1] < after["train"]["epoch_losses"][0]
    assert after["solved"], after["predictions"][0]
    assert after["predictions"][0]["attempts"][0] == [list(r) for r in task.test_outputs[0]]
