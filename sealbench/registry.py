"""Names a user can type, and what they resolve to: tasks -> families, contenders, presets, graders.

Tasks: `seal_squad_nocontext` (knowledge incorporation, families/squad), `seal_arc_fewshot` (SEAL's
ARC subsets) and `seal_arc_mini` (the generated small-grid tier) (families/arc). Contenders are YAML
files in `baselines/` (squad) and `baselines/arc/` (arc), validated by config.ContenderSpec. Presets:
`presets/all/*.yaml` (`run --all`) and `presets/seal_rl/*.yaml` (SEAL RL runs).
"""
from __future__ import annotations

import os
from pathlib import Path

from .config import TASK_FAMILY, ConfigError, ContenderSpec, RLConfig, RunConfig, validate
from .inputs import find_named, read_yaml

ROOT = Path(__file__).resolve().parent.parent
TASKS = {
    "seal_squad_nocontext": "SQuAD questions asked without their passage (SEAL knowledge incorporation)",
    "seal_arc_fewshot": "ARC few-shot puzzles; self-edits are TTT configurations (SEAL's subsets)",
    "seal_arc_mini": "generated small-grid ARC-style puzzles with known answers (CPU tier)",
}
PROTOCOLS = {
    "single": "one adapter per passage and self-edit, answering that passage (SEAL n=1)",
    "cpt": "one adapter on N passages together, answering all of them (continued pretraining)",
    "continual": "K merged edits in sequence, S orders: the forgetting matrix",
}


def family(task: str):
    """The family object of a task (families/squad or families/arc)."""
    name = TASK_FAMILY.get(task)
    if name == "squad":
        from .families.squad import FAMILY
    elif name == "arc":
        from .families.arc import FAMILY
    else:
        raise ConfigError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    return FAMILY


def baselines_dir(family_name: str) -> Path:
    root = Path(os.environ.get("SEALBENCH_BASELINES_DIR") or ROOT / "baselines")
    return root / "arc" if family_name == "arc" else root


def contender_names(family_name: str) -> list[str]:
    return [p.stem for p in sorted(baselines_dir(family_name).glob("*.yaml"))]


def load_contender(name_or_path: str, family_name: str) -> ContenderSpec:
    """A contender by name (a file in the family's baselines folder) or by path to a YAML file.
    Raises ConfigError (one line) for unknown names, bad files and contenders of another family."""
    path = find_named(baselines_dir(family_name), name_or_path, f"{family_name} contender")
    spec = validate(ContenderSpec, read_yaml(path, "contender file"), str(path))
    if spec.family != family_name:
        raise ConfigError(f"contender {spec.name!r} ({path}) is for the {spec.family} family, not {family_name}")
    return spec


def all_preset(name_or_path: str) -> tuple[Path, list[RunConfig]]:
    """A `run --all` preset: `defaults:` plus a list of `jobs:`, each a RunConfig override."""
    path = find_named(ROOT / "presets" / "all", name_or_path, "preset")
    raw = read_yaml(path, "preset")
    if not isinstance(raw, dict) or not isinstance(raw.get("jobs"), list) or not raw["jobs"]:
        raise ConfigError(f"{path}: a preset is a mapping with `defaults:` (optional) and a non-empty list `jobs:`")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: `defaults:` must be a mapping of settings")
    unknown = set(raw) - {"defaults", "jobs"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; a preset has defaults and jobs")
    jobs = []
    for i, job in enumerate(raw["jobs"]):
        if not isinstance(job, dict):
            raise ConfigError(f"{path}: job {i} must be a mapping of settings")
        jobs.append(validate(RunConfig, {**defaults, **job}, f"{path} job {i}"))
    return path, jobs


def rl_preset(name_or_path: str, overrides_where: str = "sealbench train-seal", **overrides) -> RLConfig:
    """A SEAL RL preset (presets/seal_rl/<name>.yaml or a path) with overrides (None ignored). An
    error only in the overrides is blamed on `overrides_where` (the flags), not on the preset."""
    path = find_named(ROOT / "presets" / "seal_rl", name_or_path, "SEAL RL preset")
    raw = read_yaml(path, "SEAL RL preset")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an RL preset is a mapping of settings")
    given = {k: v for k, v in overrides.items() if v is not None}
    return validate(RLConfig, {**raw, **given}, str(path), given, overrides_where)


def presets(kind: str) -> list[str]:
    return [p.stem for p in sorted((ROOT / "presets" / kind).glob("*.yaml"))]


def graders() -> list[str]:
    from .grading import GRADERS

    return list(GRADERS)
