"""Run folders: `reports/<run-id>/`, append-only results, resume, and atomic summaries.

Layout of one run folder:
    config.json      the resolved config the run-id was hashed from
    manifest.json    config + seed + package versions + model fingerprint + device + git commit
    *.jsonl          append-only rows (results.jsonl, self_edits.jsonl, ...), one JSON object a line
    summary.json     written once, atomically, when every planned unit has a row

The run-id is derived from the config, so the same command finds its own folder again and resumes
(reusing finished rows), while a changed config gets a new folder and never overwrites an old one.
A process killed mid-write can leave a torn last line; it is cut off on the next open.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (never Python's salted hash())."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text.lower()).strip("-")


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """All complete rows of a JSONL file; a torn final line (killed mid-write) is ignored."""
    if not path.exists():
        return []
    rows = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn write
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def _repair_tail(path: Path) -> None:
    """Cut a torn last line so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def for_config(cls, reports_dir: str | os.PathLike, name: str, config: dict) -> "RunFolder":
        folder = cls(Path(reports_dir) / f"{slug(name)}-{config_hash(config)}")
        folder.path.mkdir(parents=True, exist_ok=True)
        cfg_path = folder.path / "config.json"
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            if config_hash(old) != config_hash(config):
                raise RuntimeError(f"{folder.path} holds a run of another config; refusing to mix them")
        else:
            write_json_atomic(cfg_path, config)
        for p in folder.path.glob("*.jsonl"):
            _repair_tail(p)
        return folder

    # rows -----------------------------------------------------------------------------
    def append(self, name: str, row: dict) -> None:
        """Append one row and flush it to disk before returning (a kill never loses it)."""
        with open(self.path / name, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self, name: str) -> list[dict]:
        return read_jsonl(self.path / name)

    def latest_by_key(self, name: str) -> dict[str, dict]:
        """The last row written for each `key` (a retried unit supersedes its earlier failure)."""
        return {row["key"]: row for row in self.rows(name)}

    # summaries ------------------------------------------------------------------------
    def write_summary(self, summary: dict, markdown: str | None = None) -> None:
        write_json_atomic(self.path / "summary.json", summary)
        if markdown is not None:
            tmp = self.path / "summary.md.tmp"
            tmp.write_text(markdown)
            os.replace(tmp, self.path / "summary.md")

    def write_manifest(self, manifest: dict) -> None:
        write_json_atomic(self.path / "manifest.json", manifest)


# ----------------------------------------------------------------------------------- manifest
def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("sealbench", "torch", "transformers", "peft", "numpy", "lm_eval", "datasets"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ("+dirty" if dirty else "")) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_load() -> dict:
    import torch

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"torch_threads": torch.get_num_threads(), "loadavg_1m": round(load[0], 2),
            "cpu_count": os.cpu_count()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_manifest(config: dict, model_info: dict, device: str, argv: list[str] | None = None) -> dict:
    from .inner_loop import generation_mode

    return {
        "config": config,
        "seed": config.get("seed"),
        "model": model_info,
        "device": device,
        "device_name": device_name(device),
        # compiled decoding on CUDA rounds differently from eager decoding (bf16): say which ran
        "generation_mode": generation_mode(device),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(argv or sys.argv),
        "machine": machine_load(),
        "hostname": platform.node(),
        "started": now_iso(),
        "unix_time": time.time(),
    }
