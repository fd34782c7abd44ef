"""ARC self-edit configs: parsed as data only, validated with reasons, SEAL's budget rule."""
from __future__ import annotations

import json

import pytest

from sealbench.families.arc.self_edit import (MAX_CANDIDATES, ORACLE, ArcEditConfig, check_budget, edit_prompt,
                                             parse_config)

GOOD = ORACLE.to_json()


def with_(path: str, value):
    cfg = json.loads(json.dumps(GOOD))
    section, key = path.split(".")
    if value is DELETE:
        del cfg[section][key]
    else:
        cfg[section][key] = value
    return json.dumps(cfg)


DELETE = object()

MALFORMED = [
    ("", "empty"),
    ("I would use rotations and a small learning rate.", "no complete JSON"),
    ('{"data_generation": {"use_basic_augmentations": true', "no complete JSON"),
    ("[1, 2, 3]", "no complete JSON"),
    ('{"data_generation": true, "training": {}}', "data_generation"),
    ('{"training": {"strategy": "train_using_all_tokens"}}', "data_generation"),
    ('{"data_generation": {}, "training": {}}', "use_basic_augmentations is missing"),
    ("{'data_generation': {}}", "not valid JSON"),            # Python dict, not JSON
    ('{"data_generation": {"use_basic_augmentations": True}}', "not valid JSON"),
    ("{\"a\": __import__('os').system('echo pwned')}", "not valid JSON"),  # never evaluated
    (with_("data_generation.use_size_augmentations", "true"), "must be true or false"),
    (with_("data_generation.use_size_augmentations", 1), "must be true or false"),
    (with_("data_generation.use_chain_augmentations", DELETE), "use_chain_augmentations is missing"),
    (with_("training.strategy", "train_on_everything"), "strategy must be one of"),
    (with_("training.strategy", DELETE), "strategy is missing"),
    (with_("training.learning_rate", "1e-4"), "learning_rate must be a number"),
    (with_("training.learning_rate", True), "learning_rate must be a number"),
    (with_("training.learning_rate", 0), r"learning_rate must be in \(0"),
    (with_("training.learning_rate", -1e-4), r"learning_rate must be in \(0"),
    (with_("training.learning_rate", 5.0), r"learning_rate must be in \(0"),
    (with_("training.learning_rate", DELETE), "learning_rate is missing"),
    (with_("training.num_train_epochs", 2.5), "must be an integer"),
    (with_("training.num_train_epochs", "2"), "must be an integer"),
    (with_("training.num_train_epochs", 0), "at least 1"),
    (with_("training.num_train_epochs", 10**9), "absurd"),
    (with_("training.num_train_epochs", None), "must be an integer"),
    (with_("training.learning_rate", 1e400), "not valid JSON|learning_rate"),  # Infinity
    ('{"data_generation": {"use_basic_augmentations": NaN}}', "NaN is not valid JSON"),
    ('{"data_generation": {"use_basic_augmentations": true,,}}', "not valid JSON"),
    (None, "empty"),
]


@pytest.mark.parametrize("text,reason", MALFORMED)
def test_malformed_configs_are_invalid_with_reason(text, reason):
    parsed = parse_config(text)
    assert parsed.status == "invalid" and parsed.config is None
    import re
    assert re.search(reason, parsed.reason), parsed.reason


@pytest.mark.parametrize("text", [
    json.dumps(GOOD),
    "Sure! Here is the config:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nGood luck {not json}",
    json.dumps(GOOD) + json.dumps({"data_generation": {}}),          # only the first object counts
    json.dumps({**GOOD, "comment": "a {brace} inside a string"}),
    with_("training.num_train_epochs", 2.0),                          # integral float accepted
    # prose with braces of its own before the JSON: each `{` is tried until a block is the config
    "I will use {basic} and {size} augmentations, then {train} on outputs: " + json.dumps(GOOD),
    "Plan: {\"note\": 1} then " + json.dumps(GOOD),                     # a JSON object without the config's keys
    "{" * 3 + " " + json.dumps(GOOD),                                  # unclosed braces before it
    "[" + json.dumps(GOOD) + "]",                                     # inside an array
])
def test_valid_configs(text):
    parsed = parse_config(text)
    assert parsed.valid, parsed.reason
    assert parsed.config == ORACLE


def test_warnings_for_unknown_keys_and_roundtrip():
    cfg = json.loads(json.dumps(GOOD))
    cfg["training"]["batch_size"] = 4
    parsed = parse_config(json.dumps(cfg))
    assert parsed.valid and any("batch_size" in w for w in parsed.warnings)
    c = ArcEditConfig(True, False, True, False, "train_using_all_tokens", 3e-4, 3)
    assert parse_config(c.to_text()).config == c and not c.output_tokens_only


def test_budget_rule_is_seals():
    # SEAL: epochs x examples / 2 > 375 is over budget
    assert check_budget(parse_config(json.dumps(GOOD)), 375).valid                  # 2*375/2 = 375
    edit = check_budget(parse_config(json.dumps(GOOD)), 376)                         # 376 > 375
    assert edit.status == "over_budget" and "376" in edit.reason and edit.config == ORACLE
    assert check_budget(parse_config(with_("training.num_train_epochs", 4)), 250).status == "over_budget"
    assert check_budget(parse_config(with_("training.num_train_epochs", 3)), 250).valid
    assert check_budget(parse_config(json.dumps(GOOD)), 12, budget=12).valid
    assert check_budget(parse_config(json.dumps(GOOD)), 13, budget=12).status == "over_budget"
    bad = parse_config("nope")
    assert check_budget(bad, 10).status == "invalid"                                 # stays invalid


def test_edit_prompt_has_demos_only():
    demo = (((1, 2),), ((2, 1),))
    prompt = edit_prompt([demo])
    assert "[1 2] -> [2 1]#" in prompt and "train_using_output_tokens" in prompt
    assert prompt.count("#") == 1 and prompt.count("[1 2]") == 1


def test_prose_braces_then_invalid_json_report_the_first_error():
    parsed = parse_config("I use {basic} here and then {'data_generation': {}}")
    assert parsed.status == "invalid" and "not valid JSON" in parsed.reason
    parsed = parse_config('Use {"note": 1} please')   # an object, but not a config: names what is missing
    assert parsed.status == "invalid" and "data_generation" in parsed.reason


def test_brace_heavy_output_is_bounded():
    """Model gibberish full of braces: at most MAX_CANDIDATES blocks are tried, fast, never raises."""
    import time

    text = "{x} " * 5000 + json.dumps(GOOD)
    start = time.perf_counter()
    parsed = parse_config(text)
    assert parsed.status == "invalid" and time.perf_counter() - start < 1.0
    assert parse_config("{x} " * (MAX_CANDIDATES - 1) + json.dumps(GOOD)).valid
    assert parse_config("{" * 20000).status == "invalid"


def test_family_edit_prompt_never_shows_the_test_input():
    from sealbench import registry
    from sealbench.families.arc.family import FAMILY
    from sealbench.families.arc.data import mini_task
    from sealbench.families.arc.grids import grid_to_text

    task = mini_task("flip_lr", 3)
    prompt = FAMILY.edit_prompt(registry.load_contender("ttt-self-edit", "arc"), task)
    assert prompt == edit_prompt(task.train) and grid_to_text(task.test_inputs[0]) not in prompt
    assert all(grid_to_text(i) in prompt and grid_to_text(o) in prompt for i, o in task.train)
