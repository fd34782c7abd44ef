"""One config: every setting is declared once (config.py) and reaches the CLI, the presets and the
contender files from there; protocol defaults are plain overrides; every shipped file validates."""
from __future__ import annotations

import pytest

from sealbench import registry
from sealbench.cli import build_parser, settings_from_args
from sealbench.config import ConfigError, RLConfig, RunConfig, TTTSettings


def _run_parser():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices["run"]


def test_every_run_setting_has_a_flag_and_round_trips():
    run = _run_parser()
    flags = {o for a in run._actions for o in a.option_strings}
    for name in RunConfig.model_fields:
        if name == "ttt":
            assert {f"--ttt-{n.replace('_', '-')}" for n in TTTSettings.model_fields} <= flags
        elif name == "contenders":
            assert "--contender" in flags
        else:
            assert f"--{name.replace('_', '-')}" in flags, name
    args = run.parse_args(["--contender", "base", "passage", "--lr", "3e-4", "--ttt-cap", "12", "--no-keep-completions",
                           "--cpt-n", "1", "8", "--mini-size", "3", "3"])
    cfg = RunConfig.model_validate(settings_from_args(args, RunConfig))
    assert cfg.contenders == ("base", "passage") and cfg.lr == 3e-4 and cfg.ttt.cap == 12
    assert cfg.keep_completions is False and cfg.cpt_n == (1, 8) and cfg.mini_size == (3, 3)


def test_protocol_defaults_are_plain_overrides():
    single = RunConfig().resolve()
    assert (single.epochs, single.batch_size, single.lora_r, single.n_passages) == (10, 1, 32, 10)
    cpt = RunConfig(protocol="cpt", cpt_n=[1, 4]).resolve()
    assert (cpt.epochs, cpt.batch_size, cpt.grad_accum_steps, cpt.n_passages) == (3, 4, 2, 4)
    assert RunConfig(protocol="cpt", epochs=7).resolve().epochs == 7  # what the user sets wins
    arc = RunConfig(task="seal_arc_mini").resolve()
    assert arc.lora_settings().r == 128 and "k_proj" not in arc.lora_settings().targets
    cpu = RunConfig(task="seal_arc_mini", arc_budget="cpu", ttt={"max_length": 256}).resolve()
    assert cpu.ttt.cap == 12 and cpu.ttt.max_length == 256 and cpu.lora_r == 16


def test_identity_ignores_machine_settings_only():
    a = RunConfig(threads="1", edits_per_batch=4, reports_dir="x").identity()
    b = RunConfig(threads="2", edits_per_batch=32, reports_dir="y").identity()
    assert a == b and RunConfig(lr=5e-4).identity() != a


def test_every_shipped_preset_and_contender_validates():
    for name in registry.presets("all"):
        path, jobs = registry.all_preset(name)
        assert jobs and all(isinstance(j, RunConfig) for j in jobs)
    for name in registry.presets("seal_rl"):
        assert isinstance(registry.rl_preset(name), RLConfig)
    for family in ("squad", "arc"):
        names = registry.contender_names(family)
        assert names and all(registry.load_contender(n, family).family == family for n in names)
    assert registry.load_contender("in-context", "squad").role == "ceiling"


def test_a_contender_of_the_other_family_is_refused():
    with pytest.raises(ConfigError, match="unknown squad contender 'oracle'"):
        registry.load_contender("oracle", "squad")
