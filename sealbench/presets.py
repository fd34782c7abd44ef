"""Finding and reading preset files (presets/all/*.yaml for `run --all`, presets/seal_rl/*.yaml)."""
from __future__ import annotations

from pathlib import Path

import yaml


def read_preset(folder: Path, name_or_path: str, kind: str) -> tuple[Path, dict]:
    """(path, parsed YAML) of a preset given by name (a file in `folder`) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = folder / f"{name_or_path}.yaml"
    if not path.exists():
        names = ", ".join(p.stem for p in sorted(folder.glob("*.yaml")))
        raise ValueError(f"unknown {kind} {name_or_path!r}; available: {names}")
    return path, yaml.safe_load(path.read_text()) or {}
