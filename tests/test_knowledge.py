import json

import pytest

from sealbench import knowledge
from sealbench.knowledge import DataError, Passage, Question

from conftest import write_data_dir


def test_split_drops_chatty_intro_and_splits_on_dashes():
    text = "Sure, here is a list of implications:\n1. A is B.\n2. C is D.\n---\nE is F.\n\n"
    assert knowledge.split_self_edit(text) == ["1. A is B.", "2. C is D.", "E is F."]


def test_split_keeps_intro_when_no_numbered_list_follows():
    assert knowledge.split_self_edit("Sure thing\nA is B.") == ["Sure thing", "A is B."]


def test_split_self_qa_per_question():
    text = "What is A?\nAnswer: B\nQuestion 2: What is C?\nAnswer: D"
    assert knowledge.split_self_edit(text, "self-qa") == [
        "Question 1: What is A?\nAnswer: B", "Question 2: What is C?\nAnswer: D"]


def test_training_texts_prefix_title_and_always_append_passage():
    p = Passage("dev:0", "T", "The context.", [Question("q", ["a"])])
    assert knowledge.training_texts(p, ["x\ny"]) == ["T\nx", "T\ny", "T\nThe context."]
    assert knowledge.training_texts(p, []) == ["T\nThe context."]


def test_prompts_follow_seal():
    p = Passage("dev:0", "T", "C", [Question("Why?", ["a"])])
    assert knowledge.answer_prompt(p, p.questions[0]) == (
        "Let's answer a question directly and concisely.\nQuestion: Topic: T\nWhy?\nAnswer:\n")
    assert knowledge.self_edit_prompt(p).startswith(
        "Let's read the following passage and produce a list of implications")
    assert knowledge.self_edit_prompt(p).endswith("Passage:\nT\nC\n\nImplications:\n")
    with pytest.raises(ValueError, match="unknown self-edit prompt"):
        knowledge.self_edit_prompt(p, "poem")


def test_seal_eval_passages_match_the_published_notes(real_data_dir):
    passages = knowledge.seal_eval_passages(200, real_data_dir)
    notes = json.loads((real_data_dir / "notes" / "gpt-4.1_notes_val200.json").read_text())
    assert [p.context for p in passages] == [n["context"] for n in notes]
    assert passages[0].title == "Genghis Khan"
    assert len(knowledge.load_passages("train", real_data_dir)) == 100


def test_missing_data_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="squad_v1.1_dev_by_passage.json not found.*SEALBENCH_DATA_DIR"):
        knowledge.load_passages("dev", tmp_path)


def test_malformed_json_names_the_file(tmp_path):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "squad_v1.1_dev_by_passage.json").write_text("[{oops")
    with pytest.raises(DataError, match="is not valid JSON"):
        knowledge.load_passages("dev", tmp_path)


def test_missing_fields_name_the_passage(tmp_path):
    write_data_dir(tmp_path, [{"title": "T", "questions": []}])
    with pytest.raises(DataError, match="passage 0 is missing context"):
        knowledge.load_passages("dev", tmp_path)
    write_data_dir(tmp_path, [{"title": "T", "context": "c", "questions": [{"question": "q"}]}])
    with pytest.raises(DataError, match="question 0 needs"):
        knowledge.load_passages("dev", tmp_path)


def test_all_gold_answers_are_kept(tmp_path):
    write_data_dir(tmp_path, [{"title": "T", "context": "c",
                               "questions": [{"question": "q", "answers": ["a", "b", "a"]}]}])
    assert knowledge.load_passages("dev", tmp_path)[0].questions[0].answers == ["a", "b"]


def test_no_data_dir_and_no_hub_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SEALBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="--data-dir"):
        knowledge.load_passages("dev", None)
