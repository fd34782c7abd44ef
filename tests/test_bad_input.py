"""A corpus of bad inputs: every one gets exactly one error line naming the problem, exit status 2,
and leaves no run folder and no half-written file behind (issue: nothing wrong gets through
silently). Flags, contender files, presets, RL presets, data files, notes files and `grade` inputs.
All of these fail before any model loads, so the corpus is fast."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MADE_UP, MADE_UP_2, write_data_dir
from sealbench.cli import main

RUN = ["run", "--n-passages", "1", "--no-progress"]

# (flags after `sealbench run`, a word the error line must contain)
FLAG_CASES = [
    (["--threads", "abc"], "threads"), (["--threads", "-2"], "threads"), (["--threads", "0"], "threads"),
    (["--threads", "1.5"], "threads"), (["--batch-size", "0"], "batch_size"), (["--batch-size", "-1"], "batch_size"),
    (["--batch-size", "abc"], "batch_size"), (["--lora-r", "-4"], "lora_r"), (["--lora-r", "0"], "lora_r"),
    (["--lora-r", "5000"], "lora_r"), (["--lora-alpha", "0"], "lora_alpha"), (["--lora-alpha", "inf"], "lora_alpha"),
    (["--lora-alpha", "nan"], "lora_alpha"), (["--lr", "inf"], "lr"), (["--lr", "nan"], "lr"), (["--lr", "-1"], "lr"),
    (["--lr", "0"], "lr"), (["--lr", "2"], "lr"), (["--lr", "abc"], "lr"), (["--epochs", "-3"], "epochs"),
    (["--epochs", "0"], "epochs"), (["--epochs", "1.5"], "epochs"), (["--epochs", "abc"], "epochs"),
    (["--device", "tpu"], "device"), (["--device", "cuda:x"], "device"), (["--device", "gpu"], "device"),
    (["--seed", "-1"], "seed"), (["--seed", "abc"], "seed"),
    (["--n-passages", "0"], "n_passages"), (["--n-passages", "-5"], "n_passages"),
    (["--n-passages", "3000"], "n_passages"), (["--n-passages", "abc"], "n_passages"),
    (["--protocol", "cpt", "--cpt-n", "0"], "cpt_n"), (["--protocol", "cpt", "--cpt-n", "-1", "4"], "cpt_n"),
    (["--protocol", "continual", "--steps", "0"], "steps"), (["--protocol", "continual", "--sequences", "0"], "sequences"),
    (["--protocol", "continual", "--n-passages", "2", "--steps", "4"], "smaller than steps"),
    (["--task", "seal_arc_mini", "--protocol", "cpt"], "not available"),
    (["--k", "0"], "k"), (["--notes-max-tokens", "0"], "notes_max_tokens"), (["--max-answer-tokens", "0"], "max_answer_tokens"),
    (["--max-answer-tokens", "99999"], "max_answer_tokens"), (["--max-statements", "0"], "max_statements"),
    (["--answer-stops", ""], "answer_stops"), (["--answer-stops"] + [f"s{i}" for i in range(40)], "answer_stops"),
    (["--task", "seal_arc_mini", "--mini-size", "1", "1"], "mini_size"),
    (["--task", "seal_arc_mini", "--mini-size", "5", "3"], "mini_size"),
    (["--task", "seal_arc_mini", "--mini-size", "3"], "mini_size"),
    (["--task", "seal_arc_mini", "--mini-size", "40", "40"], "mini_size"),
    (["--task", "seal_arc_mini", "--mini-rules", "teleport"], "mini_rules"),
    (["--ttt-cap", "0"], "cap"), (["--ttt-leave", "0"], "leave"), (["--ttt-predict-transforms", "spin"], "predict_transforms"),
    (["--ttt-max-new-tokens", "1"], "max_new_tokens"), (["--edits-per-batch", "0"], "edits_per_batch"),
    (["--gen-batch-size", "0"], "gen_batch_size"), (["--lora-alpha", "-3"], "lora_alpha"),
    (["--max-length", "2"], "max_length"), (["--grad-accum-steps", "0"], "grad_accum_steps"),
    (["--contender", "nonexistent"], "unknown squad contender"), (["--contender", "icl"], "unknown squad contender"),
    (["--contender", "/no/such/contender.yaml"], "not found"),
    (["--seal-preset", "nonexistent", "--contender", "seal"], "unknown SEAL RL preset"),
    (["--data-dir", "/no/such/folder"], "not found"),
    (["--dry-run", "--protocol", "cpt", "--cpt-n", "5000"], "--cpt-n 5000"),  # was a pydantic traceback
    (["--protocol", "cpt", "--cpt-n", "1", "3"], "--cpt-n 3: the data has only 2"),
]
ARGPARSE_CASES = [  # argparse-level: usage, then one error line
    (["--protocol", "foo"], "invalid choice"), (["--task", "foo"], "invalid choice"), (["--grader", "foo"], "invalid choice"),
    (["--answer-style", "foo"], "invalid choice"), (["--edit-format", "foo"], "invalid choice"),
    (["--arc-budget", "gpu"], "invalid choice"), (["--dtype", "int8"], "invalid choice"), (["--n-pasages", "3"], "did you mean --n-passages"),
    (["--lora_r", "3"], "did you mean --lora-r"), (["--epoch", "3"], "did you mean --epochs"),
]

CONTENDER_FILES = [  # (YAML text of a custom contender, word in the error)
    ("name: c\nfamily: squad\nedits: self\nk: three\n", "k"),
    ("name: c\nfamily: squad\nnotes: 5\n", "notes"),
    ("name: c\nfamily: squad\nedits: magic\n", "edits"),
    ("name: c\nfamily: squad\nedits: self\ntemperature: -1\n", "temperature"),
    ("name: c\nfamily: squad\nedits: self\ntop_p: 0\n", "top_p"),
    ("name: c\nfamily: squad\nedits: file\n", "needs `file:`"),
    ("name: c\nfamily: arc\nedits: fixed\n", "needs `config:`"),
    ("name: c\nadapt: true\n", "family"),
    ("name: c\nfamily: vision\n", "family"),
    ("family: squad\n", "name"),
    ("name: two words\nfamily: squad\n", "name"),
    ("- name: c\n- family: squad\n", "mapping"),
    ("name: c\nfamily: [squad\n", "not valid YAML"),
    ("name: c\nfamily: squad\nadapt: false\nedits: self\n", "does not adapt"),
    ("name: c\nfamily: squad\nendpoint: localhost\n", "endpoint"),
    ("name: c\nfamily: squad\nedits: self\nmax_new_tokens: 0\n", "max_new_tokens"),
    ("name: c\nfamily: squad\ncolour: blue\n", "unknown setting"),
    ("name: c\nfamily: arc\n", "arc family"),
    ("name: c\nfamily: squad\nedits: fixed\nconfig: {}\n", "arc family"),
    ("name: c\nfamily: squad\nedits: self\nprompt: poem\n", "prompt"),
]
PRESETS = [  # run --all --preset <file>
    ("- task: seal_squad_nocontext\n", "mapping"), ("defaults: {seed: 0}\n", "jobs"), ("jobs: []\n", "jobs"),
    ("jobs:\n  - task: seal_squad_nocontext\n    colour: blue\n", "unknown setting"),
    ("jobs:\n  - epochs: -1\n", "epochs"), ("defaults: [1]\njobs:\n  - seed: 0\n", "defaults"),
    ("jobs:\n  - 5\n", "mapping"), ("jobs: [\n", "not valid YAML"), ("extra: 1\njobs:\n  - seed: 0\n", "unknown key"),
]
RL_PRESETS = [  # train-seal --preset <file>
    ("k: 0\n", "k"), ("rounds: abc\n", "rounds"), ("keep: all-correct\n", "keep rule"), ("colour: 1\n", "unknown setting"),
    ("- k: 1\n", "mapping"), ("repeats: 0\n", "repeats"), ("inner: {learning_rate: .inf}\n", "learning_rate"),
    ("sft_lora: {r: 0}\n", "r"), ("inner_lora: {targets: [fc1]}\n", "targets"), ("n_items: -2\n", "n_items"),
]
DATA_FILES = [  # the dev file's content, word in the error
    (b"\xff\xfe not utf8", "not UTF-8"), (b"{not json", "not valid JSON"), (b'{"a": 1}', "expected a JSON list"),
    (json.dumps([{"title": "t", "questions": []}]).encode(), "missing context"),
    (json.dumps([{"title": "t", "context": "c", "questions": [{"question": "q"}]}]).encode(), "needs 'question' and 'answer'"),
    (json.dumps([{"title": "t", "context": "c", "questions": [{"question": "q", "answer": {"x": 1}}]}]).encode(), "gold answer"),
    (json.dumps([{"title": 5, "context": "c", "questions": []}]).encode(), "title"),
    (json.dumps([{"title": "t", "context": "c", "questions": [{"question": "q", "answer": ""}]}]).encode(), "no gold answer"),
    (b"[]", "has only 0"),
]
NOTES_FILES = [
    (b"\xff\xfe", "not UTF-8"), (b"[{", "not valid JSON"), (json.dumps([{"context": "c"}]).encode(), "completions"),
    (json.dumps([{"context": "c", "completions": 5}]).encode(), "completions"), (json.dumps({"a": 1}).encode(), "list"),
]
GRADE_ROWS = [  # a line of the --in file, word in the error
    ("{not json", "not valid JSON"), ('{"question": "q"}', "needs question, gold and prediction"),
    ('{"question": "q", "gold": "a", "prediction": ["x"]}', "prediction"), ("[1, 2]", "needs question"),
    ('{"question": "q", "gold": "a", "prediction": null}', "prediction"),
]


def one_error(capsys, rc: int, word: str, usage_ok: bool = False) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not (usage_ok and ln.startswith(("usage:", "   ", "       ")))]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("sealbench: error:"), err
    assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    monkeypatch.setenv("SEALBENCH_DATA_DIR", str(data))
    return tmp_path


def nothing_written(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    assert not reports.exists() or not any(reports.iterdir()), list(reports.iterdir())


@pytest.mark.parametrize("flags,word", FLAG_CASES)
def test_bad_run_flags(env, capsys, flags, word):
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports")] + flags), word)
    nothing_written(env)


@pytest.mark.parametrize("flags,word", ARGPARSE_CASES)
def test_bad_flag_names_and_choices(env, capsys, flags, word):
    with pytest.raises(SystemExit) as exit_:
        main(RUN + flags)
    one_error(capsys, exit_.value.code, word, usage_ok=True)


@pytest.mark.parametrize("text,word", CONTENDER_FILES)
def test_bad_contender_files(env, capsys, text, word):
    path = env / "c.yaml"
    path.write_text(text)
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--contender", str(path)]), word)
    nothing_written(env)


def test_non_utf8_contender_file(env, capsys):
    path = env / "c.yaml"
    path.write_bytes(b"name: c\nfamily: squad\ndescription: \xff\xfe\n")
    one_error(capsys, main(RUN + ["--contender", str(path)]), "not UTF-8")


@pytest.mark.parametrize("text,word", PRESETS)
def test_bad_presets(env, capsys, text, word):
    path = env / "p.yaml"
    path.write_text(text)
    one_error(capsys, main(["run", "--all", "--preset", str(path), "--reports-dir", str(env / "reports")]), word)
    nothing_written(env)


@pytest.mark.parametrize("text,word", RL_PRESETS)
def test_bad_rl_presets(env, capsys, text, word):
    path = env / "rl.yaml"
    path.write_text(text)
    one_error(capsys, main(["train-seal", "--preset", str(path), "--reports-dir", str(env / "reports")]), word)
    nothing_written(env)


@pytest.mark.parametrize("content,word", DATA_FILES)
def test_bad_data_files(env, capsys, content, word):
    (env / "data" / "squad" / "squad_v1.1_dev_by_passage.json").write_bytes(content)
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports")]), word)
    nothing_written(env)


@pytest.mark.parametrize("content,word", NOTES_FILES)
def test_bad_notes_files(env, capsys, content, word):
    (env / "data" / "notes").mkdir(exist_ok=True)
    (env / "data" / "notes" / "gpt-4.1_notes_val200.json").write_bytes(content)
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--contender", "teacher-notes"]), word)
    nothing_written(env)


def test_missing_notes_file(env, capsys):
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--contender", "teacher-notes"]), "not found")
    nothing_written(env)


def test_reports_dir_that_is_a_file(env, capsys):
    (env / "file").write_text("x")
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "file")]), "is a file")


def test_a_model_folder_that_is_not_a_checkpoint(env, capsys):
    (env / "not-a-model").mkdir()
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--model", str(env / "not-a-model")]),
              "not a model checkpoint")
    nothing_written(env)


def test_a_model_that_does_not_exist(env, capsys):
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--model", str(env / "missing.gguf")]),
              "does not exist")
    nothing_written(env)


@pytest.mark.parametrize("line,word", GRADE_ROWS)
def test_bad_grade_inputs(tmp_path, capsys, line, word):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(line + "\n")
    one_error(capsys, main(["grade", "--in", str(inp), "--out", str(out)]), word)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("argv,word", [
    (["grade", "--in", "/no/such.jsonl", "--out", "OUT"], "not found"),
    (["grade", "--in", "IN", "--out", "/no/such/folder/out.jsonl"], "does not exist"),
    (["grade", "--in", "IN", "--out", "OUT", "--grader", "oracle"], "grader"),
    (["grade", "--in", "BIN", "--out", "OUT"], "not UTF-8"),
    (["compare", "EMPTY"], "no finished runs"), (["leaderboard", "EMPTY"], "nothing"),
    (["model-path", "not-a-model"], "not-a-model"),
])
def test_other_commands(tmp_path, capsys, argv, word):
    (tmp_path / "in.jsonl").write_text('{"question": "q", "gold": "a", "prediction": "a"}\n')
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\n")
    (tmp_path / "empty").mkdir()
    names = {"IN": "in.jsonl", "OUT": "out.jsonl", "BIN": "bin.jsonl", "EMPTY": "empty"}
    argv = [str(tmp_path / names[a]) if a in names else a for a in argv]
    one_error(capsys, main(argv), word)


def _numeric_run_flags() -> list[tuple[str, str]]:
    """(flag, setting name) of every `sealbench run` flag the schema types as a number, read from
    the parser itself: a numeric setting added later is checked without a new case."""
    import argparse
    import types
    import typing

    from sealbench.cli import build_parser
    from sealbench.config import RunConfig

    def number(model, dest):
        head, _, rest = dest.partition("__")
        field = model.model_fields.get(head)
        if field is None:
            return False
        ann = field.annotation
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = args[0] if len(args) == 1 else None
        if rest:
            return isinstance(ann, type) and number(ann, rest)
        return ann in (int, float)

    run_parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    return [(a.option_strings[0], a.dest.rsplit("__", 1)[-1]) for a in run_parser._actions
            if a.option_strings and number(RunConfig, a.dest)]


def test_the_numeric_flags_are_found():
    flags = dict(_numeric_run_flags())
    assert len(flags) >= 20 and flags["--lora-r"] == "lora_r" and flags["--epochs"] == "epochs"


@pytest.mark.parametrize("flag,name", _numeric_run_flags())
def test_every_numeric_run_flag_refuses_a_word(env, capsys, flag, name):
    """Not a number: one error line naming the setting, exit 2, nothing written (for every flag the
    schema types as a number, not only those in FLAG_CASES)."""
    line = one_error(capsys, main(RUN + [flag, "abc", "--reports-dir", str(env / "reports")]), "")
    assert name in line or flag in line or flag.lstrip("-").replace("-", "_") in line, (flag, line)
    nothing_written(env)


def test_number_golds_and_predictions_are_graded_as_text(tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"question": "q", "gold": 42, "prediction": "42"}\n{"question": "q", "gold": "7", "prediction": 7}\n')
    assert main(["grade", "--in", str(inp), "--out", str(out)]) == 0
    assert [json.loads(x)["correct"] for x in out.read_text().splitlines()] == [True, True]


def test_a_gold_answer_given_as_a_number_in_the_data_is_accepted(tmp_path):
    from sealbench.families.squad.data import seal_eval_passages

    data = write_data_dir(tmp_path / "d", [{"title": "t", "context": "c", "questions": [{"question": "q", "answer": 1979}]}])
    (p,) = seal_eval_passages(1, data)
    assert p.questions[0].answers == ["1979"]


def test_a_bom_is_accepted_in_yaml_and_json(env, tmp_path):
    from sealbench.registry import load_contender

    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffname: c\nfamily: squad\n".encode())
    assert load_contender(str(path), "squad").name == "c"


# ------------------------------------------------------------------ issue 24: train-seal's flags
@pytest.mark.parametrize("flags,word", [
    (["--threads", "0"], "threads = '0'"), (["--threads", "-1"], "threads = '-1'"), (["--threads", "x"], "threads"),
    (["--n-items", "500"], "n_items = 500: the RL pool has only 2"), (["--k", "0"], "k = '0'"),
    (["--rounds", "0"], "rounds"), (["--preset", "nonexistent"], "unknown SEAL RL preset"),
])
def test_bad_train_seal_flags(env, capsys, flags, word):
    rc = main(["train-seal", "--preset", "tiny", "--no-progress", "--reports-dir", str(env / "reports")] + flags)
    one_error(capsys, rc, word)
    nothing_written(env)


# ------------------------------------------------------------------ issue 24: storage and state
@pytest.fixture
def ckpt(tmp_path, tiny):
    path = tmp_path / "tinyck"
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


def tiny_run(env, ckpt, *extra) -> list[str]:
    return RUN + ["--reports-dir", str(env / "reports"), "--model", str(ckpt), "--contender", "base",
                  "--max-answer-tokens", "2", *extra]


def finished(env, ckpt, capsys) -> Path:
    assert main(tiny_run(env, ckpt)) == 0
    capsys.readouterr()
    return next((env / "reports").glob("seal-squad-*"))


def test_a_corrupt_config_json_in_an_existing_run_folder(env, ckpt, capsys):
    folder = finished(env, ckpt, capsys)
    (folder / "config.json").write_text('{"task": ')
    line = one_error(capsys, main(tiny_run(env, ckpt)), "config.json is not valid JSON")
    assert "delete the folder" in line and (folder / "config.json").read_text() == '{"task": '


def test_a_row_missing_its_key_names_file_and_line(env, ckpt, capsys):
    folder = finished(env, ckpt, capsys)
    rows = (folder / "results.jsonl").read_text().splitlines()
    row = json.loads(rows[0])
    del row["key"]
    (folder / "results.jsonl").write_text("\n".join([json.dumps(row)] + rows[1:]) + "\n")
    one_error(capsys, main(tiny_run(env, ckpt)), "results.jsonl:1 is not a valid row (it has no key)")
    assert main(tiny_run(env, ckpt, "--quarantine-corrupt")) == 0  # the fix the line names works
    assert (folder / "results.jsonl.corrupt").exists()


def test_a_full_disk_is_one_line_and_leaves_only_whole_rows(env, ckpt, capsys, monkeypatch):
    import errno
    import os

    from sealbench import store

    real = os.write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            real(fd, bytes(data[:7]))  # part of a row reaches the disk, then it is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(store.os, "write", full)
    rc = main(tiny_run(env, ckpt))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("run folder:")]
    assert rc == 2 and len(err) == 1 and err[0].startswith("sealbench: error: no space left on the device writing")
    folder = next((env / "reports").glob("seal-squad-*"))
    assert (folder / "results.jsonl").read_bytes() == b"" and not (folder / "COMPLETE").exists()
    monkeypatch.setattr(store.os, "write", real)
    assert main(tiny_run(env, ckpt)) == 0 and (folder / "COMPLETE").exists()  # space freed: it resumes


def test_a_read_only_run_folder_is_one_line(env, ckpt, capsys, monkeypatch):
    import errno

    from sealbench import store

    folder = finished(env, ckpt, capsys)

    class ReadOnly:  # what filelock raises on a read-only folder (root in CI cannot chmod one)
        def __init__(self, path, timeout=0):
            self.path = path

        def acquire(self):
            raise PermissionError(errno.EROFS, "Read-only file system", str(self.path))
    monkeypatch.setattr(store, "FileLock", ReadOnly)
    one_error(capsys, main(tiny_run(env, ckpt)), f"cannot write {folder}: Read-only file system")


def test_a_read_only_leaderboard_output_is_one_line(env, ckpt, capsys, monkeypatch):
    import errno

    from sealbench import store

    finished(env, ckpt, capsys)
    out = env / "board"
    out.mkdir()

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(store.tempfile, "mkstemp", refuse)
    one_error(capsys, main(["leaderboard", str(env / "reports"), "--out", str(out), "--no-plots"]),
              f"cannot write {out / 'leaderboard.md'}: Read-only file system")
    assert not any(out.iterdir())


def test_a_cache_dir_that_is_a_file_is_one_line(env, capsys, monkeypatch):
    (env / "cache").write_text("x")
    monkeypatch.setenv("SEALBENCH_CACHE_DIR", str(env / "cache"))
    line = one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--dry-run"]),
                     "a file stands where a folder is needed")
    assert "SEALBENCH_CACHE_DIR" in line
    nothing_written(env)


def test_a_model_folder_with_garbage_weights_is_one_line(env, ckpt, capsys):
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage" * 500)
    one_error(capsys, main(tiny_run(env, ckpt)), f"the weights in {ckpt} are unreadable")
    nothing_written(env)


# ------------------------------------------------------------------ issue 24: silent acceptance
@pytest.mark.parametrize("flags,word", [
    (["--answer-stops", " "], "' ' is only spaces or tabs"), (["--answer-stops", "\t", "Q:"], "only spaces or tabs"),
    (["--answer-stops", "Q:", "  "], "answer_stops.1 = '  '"),
    (["--ttt-cap", "64"], "--ttt-cap: ARC setting(s), unused by task seal_squad_nocontext"),
    (["--arc-budget", "cpu"], "--arc-budget: ARC setting"), (["--edit-format", "guided"], "--edit-format: ARC"),
    (["--n-tasks", "3"], "--n-tasks: ARC"), (["--keep-completions"], "--keep-completions: ARC"),
])
def test_settings_that_would_be_silently_wrong_are_refused(env, capsys, flags, word):
    one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--dry-run"] + flags), word)
    nothing_written(env)


def test_answer_stops_are_typed_as_help_shows_them():
    from sealbench.config import RunConfig, RLConfig

    assert RunConfig(answer_stops=["\\n\\n", "Q\\\\n"]).answer_stops == ("\n\n", "Q\\n")
    assert RLConfig(answer_stops=["\\nQuestion:"]).answer_stops == ("\nQuestion:",)
    assert RunConfig().answer_stops[0] == "\n\n"  # the default, a real newline, is unchanged


def test_a_preset_may_give_threads_as_a_number(env, capsys):
    from sealbench.config import ConfigError, RunConfig, validate

    assert validate(RunConfig, {"threads": 2}, "preset").threads == "2"
    with pytest.raises(ConfigError, match="threads"):
        validate(RunConfig, {"threads": True}, "preset")
    preset = env / "p.yaml"
    preset.write_text("jobs:\n  - {task: seal_squad_nocontext, contenders: [base], n_passages: 1, threads: 2}\n")
    from sealbench.registry import all_preset

    assert all_preset(str(preset))[1][0].threads == "2"  # was "threads = 2: Input should be a valid string"


def test_a_leaderboard_built_while_a_run_rewrites_its_summary_is_refused(env, ckpt, capsys):
    """A finished run being re-run (COMPLETE gone for a moment, the folder locked) is not dropped
    from the rankings with exit 0: the leaderboard stops in one line naming the folder and holder."""
    import os

    from sealbench.store import RunFolder

    folder = finished(env, ckpt, capsys)
    out = env / "board"
    config = json.loads((folder / "config.json").read_text())
    with RunFolder.open(env / "reports", folder.name, config):
        (folder / "COMPLETE").unlink()
        line = one_error(capsys, main(["leaderboard", str(env / "reports"), "--out", str(out), "--no-plots"]),
                         f"{folder} is being rewritten by pid {os.getpid()}")
        assert "again when that run finishes" in line and not out.exists()


@pytest.mark.parametrize("command", ["compare", "leaderboard"])
def test_a_non_utf8_summary_names_the_file(env, ckpt, capsys, command):
    folder = finished(env, ckpt, capsys)
    (folder / "summary.jsonl").write_bytes((folder / "summary.jsonl").read_bytes()[:10] + b"\xff\xfe\n")
    extra = ["--out", str(env / "board"), "--no-plots"] if command == "leaderboard" else ["--out", str(env / "cmp")]
    one_error(capsys, main([command, str(env / "reports")] + extra), f"{folder / 'summary.jsonl'} is not UTF-8")


@pytest.mark.parametrize("flag,word", [("--opn", "did you mean --open"), ("--grade", "did you mean --grader?"),
                                       ("--n-passages", "unrecognized arguments: --n-passages x\n")])
def test_view_suggests_only_flags_it_has(tmp_path, capsys, flag, word):
    with pytest.raises(SystemExit) as exit_:
        main(["view", str(tmp_path), flag, "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and word in err + "\n", err
    line = next(ln for ln in err.splitlines() if ln.startswith("sealbench: error:"))
    suggested = [w.strip("?)(") for w in line.split("did you mean", 1)[-1].split()] if "did you mean" in line else []
    assert all(s in ("--out", "--data-dir", "--grader", "--open", "--help", "or", "-h") for s in suggested), line


def test_a_failed_judge_check_leaves_no_half_run_folder(env, ckpt, capsys, monkeypatch):
    monkeypatch.setenv("SEALBENCH_JUDGE_API_KEY", "not-a-key")
    monkeypatch.setenv("SEALBENCH_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    rc = main(tiny_run(env, ckpt, "--grader", "judge"))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("run folder:")]
    assert rc == 2 and len(err) == 1 and err[0].startswith("sealbench: error: judge grader: cannot reach"), err
    nothing_written(env)


def test_a_read_only_cache_dir_is_one_line(env, capsys, monkeypatch):
    """A model that must be converted into a read-only cache (simulated: root in CI cannot chmod one)."""
    import errno

    from sealbench.engine import checkpoints

    cache = env / "cache"
    monkeypatch.setenv("SEALBENCH_CACHE_DIR", str(cache))

    def read_only(gguf, out, verbose=False):
        raise PermissionError(errno.EROFS, "Read-only file system", str(out))
    monkeypatch.setattr(checkpoints, "convert_gguf", read_only)
    line = one_error(capsys, main(RUN + ["--reports-dir", str(env / "reports"), "--dry-run"]),
                     f"cannot write {cache / 'models'}")
    assert "Read-only file system" in line and "set SEALBENCH_CACHE_DIR to a writable folder" in line
    nothing_written(env)


def test_a_read_only_compare_output_is_one_line(env, ckpt, capsys, monkeypatch):
    import errno

    from sealbench import store

    finished(env, ckpt, capsys)
    out = env / "cmp"
    out.mkdir()

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(store.tempfile, "mkstemp", refuse)
    one_error(capsys, main(["compare", str(env / "reports"), "--out", str(out), "--no-plots"]),
              f"cannot write {out / 'results.csv'}: Read-only file system")
    assert not any(out.iterdir())


# ------------------------------------------------------------------ issue 24/25: a new-user attack, round 2
def train_seal(env, ckpt, *extra) -> list[str]:
    return ["train-seal", "--preset", "tiny", "--model", str(ckpt), "--device", "cpu", "--heldout-items", "0",
            "--max-new-tokens", "8", "--max-answer-tokens", "4", "--no-progress",
            "--reports-dir", str(env / "reports"), *extra]


def test_a_corrupt_rl_manifest_is_one_line(env, ckpt, capsys, monkeypatch):
    from sealbench.rl import loop

    def stop(*a, **k):  # the rounds never start: a killed run, and the test stays fast
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "_round", stop)
    assert main(train_seal(env, ckpt)) == 130
    capsys.readouterr()
    manifest = next((env / "reports").glob("seal-rl-*")) / "manifest.json"
    manifest.write_text('{"config": {"kind": "seal-rl"')  # a full disk's half a file
    line = one_error(capsys, main(train_seal(env, ckpt)), f"{manifest} is not valid JSON")
    assert "delete that file and re-run the same command" in line
    assert manifest.read_text() == '{"config": {"kind": "seal-rl"'
    manifest.unlink()  # the fix the line names works: the run goes on (to the rounds)
    assert main(train_seal(env, ckpt)) == 130 and json.loads(manifest.read_text())["models"]["base"]["fingerprint"]


@pytest.mark.parametrize("flags", [["--edit-format", "guided"], ["--ttt-cap", "64"], ["--mini-rules", "color_map"]])
def test_arc_flags_on_knowledge_train_seal_are_refused(env, capsys, flags):
    rc = main(["train-seal", "--preset", "tiny", "--no-progress", "--reports-dir", str(env / "reports")] + flags)
    one_error(capsys, rc, f"{flags[0]}: ARC setting(s), unused by task seal_squad_nocontext")
    nothing_written(env)


def test_arc_flags_with_run_all_go_to_arc_jobs_only(env, capsys):
    from sealbench.cli import all_jobs

    knowledge_only = env / "k.yaml"
    knowledge_only.write_text("jobs:\n  - {task: seal_squad_nocontext, contenders: [base], n_passages: 1}\n")
    line = one_error(capsys, main(["run", "--all", "--preset", str(knowledge_only), "--dry-run", "--edit-format",
                                   "guided", "--reports-dir", str(env / "reports")]), "--edit-format: ARC setting")
    assert f"preset {knowledge_only} has no ARC job" in line
    nothing_written(env)
    mixed = env / "m.yaml"
    mixed.write_text("jobs:\n  - {task: seal_squad_nocontext, contenders: [base], n_passages: 1}\n"
                     "  - {task: seal_arc_mini, contenders: [icl], n_tasks: 1}\n")
    plain = all_jobs(str(mixed), {"seed": 3})
    knowledge, arc = all_jobs(str(mixed), {"seed": 3, "edit_format": "guided", "ttt": {"cap": 64}})
    assert knowledge == plain[0] and knowledge.seed == 3  # its identity (run id) is unchanged
    assert arc.edit_format == "guided" and arc.ttt.cap == 64 and arc.seed == 3


@pytest.mark.parametrize("command", ["view", "grade"])
@pytest.mark.parametrize("name", ["results.jsonl", "summary.jsonl"])
def test_a_corrupt_row_seen_by_a_reader_suggests_what_works(env, ckpt, capsys, command, name):
    """view and grade have no --quarantine-corrupt: the line names what does work."""
    folder = finished(env, ckpt, capsys)
    rows = (folder / name).read_text().splitlines()
    (folder / name).write_text("\n".join(["{not json"] + rows[1:]) + "\n")
    argv = [command, str(folder)] + (["--grader", "em"] if command == "grade" else ["--out", str(env / "v.html")])
    line = one_error(capsys, main(argv), f"{folder / name}:1")
    assert "--quarantine-corrupt" not in line or "sealbench run" in line, line
    assert f"re-run the `sealbench run` command that wrote {folder}" in line
    assert not (env / "v.html").exists()
    if name == "results.jsonl":  # the fix the line names works
        assert main(tiny_run(env, ckpt, "--quarantine-corrupt")) == 0
    else:
        assert main(tiny_run(env, ckpt)) == 0
    capsys.readouterr()
    assert main(argv) == 0


@pytest.mark.parametrize("command", ["view", "compare", "grade"])
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_short_results_file_in_a_finished_folder_is_one_line(env, ckpt, capsys, command, damage):
    assert main(tiny_run(env, ckpt, "--n-passages", "2")) == 0
    capsys.readouterr()
    folder = next((env / "reports").glob("seal-squad-*"))
    results = folder / "results.jsonl"
    assert "\nresults.jsonl: 2 units\n" in (folder / "COMPLETE").read_text()
    if damage == "missing":
        results.unlink()
    else:
        results.write_text(results.read_text().splitlines()[0] + "\n")
    argv = {"view": ["view", str(folder), "--out", str(env / "v.html")], "compare": ["compare", str(env / "reports"),
            "--out", str(env / "cmp"), "--no-plots"], "grade": ["grade", str(folder), "--grader", "em"]}[command]
    what = "is missing" if damage == "missing" else "holds 1 of the 2 unit rows"
    line = one_error(capsys, main(argv), f"{results} {what}")
    assert f"re-run the `sealbench run` command that wrote {folder}" in line
    assert not (env / "v.html").exists() and not (env / "cmp").exists()
    assert main(tiny_run(env, ckpt, "--n-passages", "2")) == 0  # the fix the line names works
    assert len(results.read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(argv) == 0


def _fail_nth_write(monkeypatch, n: int, code: int):
    """The n-th temp file of write_atomic cannot be created (a full disk, read-only storage)."""
    import os

    from sealbench import store

    real, calls = store.tempfile.mkstemp, [0]

    def mkstemp(*a, **k):
        calls[0] += 1
        if calls[0] >= n:
            raise OSError(code, os.strerror(code))
        return real(*a, **k)
    monkeypatch.setattr(store.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code", ["EROFS", "ENOSPC"])
def test_view_on_a_read_only_folder_or_a_full_disk_names_the_path_and_the_fix(env, ckpt, capsys, monkeypatch, code):
    import errno

    folder = finished(env, ckpt, capsys)
    _fail_nth_write(monkeypatch, 1, getattr(errno, code))
    line = one_error(capsys, main(["view", str(folder)]), str(folder / "view.html"))
    assert "pass --out a file in a writable folder" in line and "Errno" not in line
    out = env / "new" / "deeper" / "v.html"
    one_error(capsys, main(["view", str(folder), "--out", str(out)]), str(out))
    assert not (env / "new").exists() and not (folder / "view.html").exists()


@pytest.mark.parametrize("code,word", [("EROFS", "Read-only file system"), ("ENOSPC", "no space left")])
def test_compare_on_a_full_disk_or_read_only_out_leaves_nothing(env, ckpt, capsys, monkeypatch, code, word):
    import errno

    finished(env, ckpt, capsys)
    _fail_nth_write(monkeypatch, 2, getattr(errno, code))  # results.csv is written, runs.csv is not
    out = env / "cmp" / "new"
    line = one_error(capsys, main(["compare", str(env / "reports"), "--out", str(out), "--no-plots"]), word)
    assert str(out / "runs.csv") in line and "pass --out a writable folder" in line and "Errno" not in line
    assert not (env / "cmp").exists()  # the folders it created are gone too
    kept = env / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("x")
    one_error(capsys, main(["compare", str(env / "reports"), "--out", str(kept), "--no-plots"]), word)
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]


def _interrupted_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sealbench:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_ctrl_c_while_loading_the_model_says_so(env, ckpt, capsys, monkeypatch):
    from sealbench import runner

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "load_model", ctrl_c)
    assert main(tiny_run(env, ckpt)) == 130
    line = _interrupted_line(capsys)
    assert line.startswith(f"sealbench: interrupted while loading the model {ckpt}: nothing was written"), line
    nothing_written(env)


def test_ctrl_c_while_sampling_self_edits_says_what_is_kept(env, ckpt, capsys, monkeypatch):
    from sealbench.edits import EditSources

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(EditSources, "produce", ctrl_c)
    assert main(tiny_run(env, ckpt, "--contender", "base", "self-notes")) == 130
    line = _interrupted_line(capsys)
    assert line.startswith("sealbench: interrupted while sampling the self-edits of 2 unit(s)"), line
    assert "re-run the same command to resume" in line and "interrupted; " not in line


def test_ctrl_c_in_train_seal_says_what_is_kept(env, ckpt, capsys, monkeypatch):
    from sealbench.rl import loop

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "_round", ctrl_c)
    assert main(train_seal(env, ckpt)) == 130
    assert _interrupted_line(capsys).startswith("sealbench: interrupted while training the SEAL policy")


def test_a_second_ctrl_c_exits_130_without_a_traceback(tmp_path):
    """The first Ctrl-C stops the command and cleans up; a second one (during that clean-up, or as
    the interpreter exits) ends the process with status 130, one line, no traceback."""
    import subprocess
    import sys

    script = tmp_path / "two.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from sealbench import cli\n"
        "def slow(args):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(10)\n"
        "    finally:  # the clean-up, interrupted\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(10)\n"
        "cli.cmd_list = slow\n"
        "sys.exit(cli.main(['list']))\n")
    import signal

    # As from a terminal: a job a non-interactive shell starts in the background (a CI script's
    # `cmd &`) inherits SIGINT ignored, and Python then installs no Ctrl-C handler at all.
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc
    assert "Traceback" not in proc.stderr and "sealbench: interrupted again" in proc.stderr, proc.stderr


@pytest.mark.parametrize("argv,want", [
    (["train-seal", "--preset", "tiny", "--max-statements", "0"],
     "sealbench train-seal: max_statements = '0': Input should be greater than or equal to 1 "
     "(flag --max-statements; allowed: 1 to 100000)"),
    (["train-seal", "--preset", "tiny", "--top-p", "0"], "(flag --top-p; allowed: > 0 and <= 1)"),
    (["train-seal", "--preset", "tiny", "--inner-learning-rate", "5"], "flag --inner-learning-rate; allowed:"),
    (["run", "--n-passages", "0"], "(flag --n-passages; allowed: 1 to"),
])
def test_an_out_of_range_flag_names_the_flag_the_value_and_the_range(env, capsys, argv, want):
    line = one_error(capsys, main(argv + ["--reports-dir", str(env / "reports")]), want)
    assert "presets/" not in line and ".yaml" not in line, line  # the flag is blamed, not the preset
    nothing_written(env)


def test_a_bad_flag_with_run_all_is_blamed_on_the_flag(env, capsys):
    preset = env / "p.yaml"
    preset.write_text("jobs:\n  - {task: seal_squad_nocontext, contenders: [base], n_passages: 1}\n")
    line = one_error(capsys, main(["run", "--all", "--preset", str(preset), "--epochs", "0",
                                   "--reports-dir", str(env / "reports")]), "sealbench run --all (job 0 of")
    assert "epochs = '0'" in line and "flag --epochs; allowed: 1 to" in line


@pytest.mark.parametrize("grader", ["", " ", "MATCH"])
@pytest.mark.parametrize("target", ["run", "file"])
def test_grade_refuses_an_empty_or_unknown_grader_with_the_list(tmp_path, capsys, grader, target):
    (tmp_path / "in.jsonl").write_text('{"question": "q", "gold": "a", "prediction": "a"}\n')
    argv = (["grade", str(tmp_path), "--grader", grader] if target == "run" else
            ["grade", "--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl"), "--grader", grader])
    one_error(capsys, main(argv), f"--grader {grader!r}: unknown grader; choose one of: match, em, f1, judge")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("same", ["same", "relative", "link"])
def test_grade_refuses_to_overwrite_its_input(tmp_path, capsys, monkeypatch, same):
    inp = tmp_path / "in.jsonl"
    text = '{"question": "q", "gold": "a", "prediction": "a"}\n'
    inp.write_text(text)
    monkeypatch.chdir(tmp_path)
    out = {"same": str(inp), "relative": "./in.jsonl", "link": str(tmp_path / "link.jsonl")}[same]
    if same == "link":
        (tmp_path / "link.jsonl").symlink_to(inp)
    one_error(capsys, main(["grade", "--in", str(inp), "--out", out]), "is the --in file; pass another --out")
    assert inp.read_text() == text


@pytest.mark.parametrize("argv,word", [
    (["compare", "MISSING"], "MISSING does not exist; pass a folder that holds run folders"),
    (["leaderboard", "MISSING", "--no-plots"], "MISSING does not exist"),
    (["compare", "FILE"], "FILE is a file, not a folder"),
    (["grade", "EMPTY", "--grader", "em"], "EMPTY is not a run folder (no config.json or COMPLETE); pass"),
    (["grade", "MISSING", "--grader", "em"], "MISSING is not a run folder"),
])
def test_a_path_that_is_not_what_the_command_needs_says_so(tmp_path, capsys, argv, word):
    names = {"MISSING": tmp_path / "no-such-dir", "FILE": tmp_path / "f.txt", "EMPTY": tmp_path / "empty"}
    (tmp_path / "empty").mkdir()
    (tmp_path / "f.txt").write_text("x")
    for k, v in names.items():
        word = word.replace(k, str(v))
    argv = [str(names[a]) if a in names else a for a in argv]
    line = one_error(capsys, main(argv), word)
    assert "no finished runs" not in line and "not finished" not in line, line
    assert not (tmp_path / "no-such-dir").exists() and not any((tmp_path / "empty").iterdir())


def test_grade_on_a_reports_dir_points_at_its_run_folders(env, ckpt, capsys):
    folder = finished(env, ckpt, capsys)
    line = one_error(capsys, main(["grade", str(env / "reports"), "--grader", "em"]), "is not a run folder")
    assert f"it holds run folders, e.g. {folder}: pass one of them" in line


def _read_only(monkeypatch):
    """A read-only run folder as filelock and write_atomic meet it (root in CI cannot chmod one)."""
    import errno

    import filelock

    from sealbench import store

    class ReadOnly:
        def __init__(self, path, timeout=0):
            self.path = path

        def acquire(self):
            raise PermissionError(errno.EROFS, "Read-only file system", str(self.path))

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(filelock, "FileLock", ReadOnly)
    monkeypatch.setattr(store.tempfile, "mkstemp", refuse)


def test_grade_on_a_read_only_graded_folder_needs_no_lock(env, ckpt, capsys, monkeypatch):
    folder = finished(env, ckpt, capsys)
    assert main(["grade", str(folder), "--grader", "em"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    _read_only(monkeypatch)
    assert main(["grade", str(folder), "--grader", "em"]) == 0  # already graded: it only reads
    assert "up to date" in capsys.readouterr().err
    assert main(["grade", str(folder), "--grader", "match"]) == 0  # the run's own grader: up to date too
    assert "up to date" in capsys.readouterr().err
    line = one_error(capsys, main(["grade", str(folder), "--grader", "f1"]), f"{folder} is read-only")
    assert "copy the folder somewhere writable and grade the copy" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_the_first_dry_run_says_it_calibrates_before_it_does(env, ckpt, capsys, monkeypatch):
    from sealbench import estimate

    seen = []

    def measure(cfg, p):  # what was printed before the (real: minutes on a CPU) calibration starts
        seen.append(capsys.readouterr().err)
        return estimate.Rates(0.01, 1e-5, 1e-3, 0.01, 0.05, 1.0)
    monkeypatch.setattr(estimate, "_measure", measure)
    assert main(tiny_run(env, ckpt, "--dry-run")) == 0
    assert len(seen) == 1 and "calibrating the cost model first" in seen[0] and "20-60 s" in seen[0], seen
    assert main(tiny_run(env, ckpt, "--dry-run")) == 0  # recorded: no calibration, no line
    assert len(seen) == 1 and "calibrating" not in capsys.readouterr().err


def test_a_whole_last_row_without_its_newline_is_kept_and_a_torn_one_cut(tmp_path):
    """A finished unit's row whose newline is missing (an edit by hand) is a row: read, counted, and
    given its newline when the folder is opened again, never cut as a torn write."""
    from sealbench.store import _cut_torn_tail, read_rows

    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v": 2}')
    assert [r["key"] for r in read_rows(path, keyed=True)] == ["a", "b"]
    _cut_torn_tail(path)
    assert path.read_text() == '{"key": "a", "v": 1}\n{"key": "b", "v": 2}\n'
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v"')  # a torn write: skipped, then cut
    assert [r["key"] for r in read_rows(path, keyed=True)] == ["a"]
    _cut_torn_tail(path)
    assert path.read_text() == '{"key": "a", "v": 1}\n'


@pytest.mark.parametrize("preset", ["smoke", "nosuch"])
def test_a_preset_without_all_is_refused(tmp_path, capsys, preset):
    rc = main(["run", "--preset", preset, "--reports-dir", str(tmp_path / "r")])
    one_error(capsys, rc, f"--preset {preset}: presets are sets of jobs for `sealbench run --all`")
    assert not (tmp_path / "r").exists()
