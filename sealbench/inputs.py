"""Reading what a user gives sealbench: the data directory, text and YAML files, named files.

Every command finds the data the same way (`data_dir`), every file is read as UTF-8 with a BOM
accepted, and every failure is one line naming the file and the fix (config.ConfigError unless the
caller names another error).
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .config import ConfigError

DATA_WHERE = ("pass --data-dir, set SEALBENCH_DATA_DIR, or put the data at ../shared/data beside the "
              "checkout")


def data_dir(explicit: str | None = None) -> Path | None:
    """Where the data is, for every command alike: --data-dir, else $SEALBENCH_DATA_DIR, else
    `../shared/data` beside the checkout if it exists, else None (the public loaders are tried)."""
    value = explicit or os.environ.get("SEALBENCH_DATA_DIR")
    if value:
        return Path(value).expanduser()
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside if beside.is_dir() else None


def read_text(path: Path, what: str, error: type[Exception] = None, hint: str = "") -> str:
    """A file's text, read as UTF-8 (a BOM is accepted). A missing, unreadable or non-UTF-8 file is
    one `error` line (ConfigError by default) naming the file; `hint` is added where it is missing."""
    error = error or ConfigError
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise error(f"{what} {path} not found{'; ' + hint if hint else ''}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file") from None
    except UnicodeDecodeError as err:
        raise error(f"{path} is not UTF-8 text (bad byte at offset {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror}") from None


def read_yaml(path: Path, what: str):
    """A YAML file as data; unreadable, non-UTF-8 or malformed files are one ConfigError line."""
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None


def find_named(folder: Path, name_or_path: str, what: str) -> Path:
    """A file by name (`folder/<name>.yaml`) or by path; unknown names list what exists."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.exists():
        names = ", ".join(p.stem for p in sorted(folder.glob("*.yaml")))
        raise ConfigError(f"unknown {what} {name_or_path!r}; available: {names} (or a path to a .yaml)")
    return candidate
