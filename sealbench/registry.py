"""Names a user can type, and what they resolve to: tasks -> families, contenders, presets, graders.

Tasks: each family declares its own (families/*/__init__.py `TASKS`): `seal_squad_nocontext`
(knowledge incorporation, families/squad), `seal_arc_fewshot` (SEAL's ARC subsets) and
`seal_arc_mini` (the generated small-grid tier) (families/arc). Contenders are YAML
files in `baselines/` (squad) and `baselines/arc/` (arc), validated by config.ContenderSpec. Presets:
`presets/all/*.yaml` (`run --all`) and `presets/seal_rl/*.yaml` (SEAL RL runs).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from .config import ConfigError, ContenderSpec, RLConfig, RunConfig, validate
from .families import PACKAGES, TASK_FAMILY
from .families.base import Family
from .inputs import find_named, read_yaml

ROOT = Path(__file__).resolve().parent.parent
TASKS = {task: text for p in PACKAGES.values() for task, text in p.TASKS.items()}  # task -> what it is
PROTOCOLS = {
    "single": "one adapter per passage and self-edit, answering that passage (SEAL n=1)",
    "cpt": "one adapter on N passages together, answering all of them (continued pretraining)",
    "continual": "K merged edits in sequence, S orders: the forgetting matrix",
}


def family(task: str) -> Family:
    """The family object of a task (families/<name>/family.py `FAMILY`, loaded on first use: it
    imports torch). Raises ConfigError for an unknown task."""
    name = TASK_FAMILY.get(task)
    if name is None:
        raise ConfigError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    return importlib.import_module(f"{PACKAGES[name].__name__}.family").FAMILY


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
