"""Run folders and the unit cache: one writer per folder, atomic files, rows that survive a kill.

    reports/<run-id>/
        config.json     the resolved config the run id is hashed from
        manifest.json   config, seed, versions, model fingerprint and license, device, threads, git
        results.jsonl   one row per finished unit (append-only, fsynced; the newest row of a key wins)
        self_edits.jsonl  every generated or fetched self-edit
        summary.jsonl / summary.csv / summary.md   the results table (report/results.py)
        COMPLETE        written last, once every planned unit has a row (the time, the unit count,
                        the summary format: schema.py)

A folder is created only once its run can start (the model loaded), so a failed start leaves
nothing behind. A run holds the folder's lock (`filelock`) while it writes; a second process names
the holder and stops. Temporary files have unique names and stale ones are swept. A torn last line
(a kill or a full disk mid-write) is skipped on read and cut off before the next append, at any
depth of the folder (an RL run's round_N/); a failed append truncates back to the last whole row.
A corrupt line anywhere else (or a row without a key) is reported with its file and line (or moved
aside with `quarantine=True`). A full disk or read-only storage is a StoreError naming the path.
Readers never write.

Unit rows are keyed by content (families/base.py), so a new run reuses every finished row with the
same key from any run folder under the reports dir, and records where it came from (`reused_from`).
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from .schema import SUMMARY_FORMAT

RESULTS, SELF_EDITS, COMPLETE = "results.jsonl", "self_edits.jsonl", "COMPLETE"


class StoreError(RuntimeError):
    """A run folder that cannot be used (locked, corrupt, not writable); one line with the fix."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, text: str, fix: str | None = None) -> None:
    """Write `text` to `path` through a uniquely named temp file in the same folder + rename.
    A full disk or a read-only folder is a StoreError (one line; `fix`: what to do instead of the
    default advice) and leaves `path` as it was."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise StoreError(_os_message(err, path, fix)) from None
    try:
        os.fchmod(fd, _plain_mode(path))  # mkstemp makes 0600: give the mode a plain open() would
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise StoreError(_os_message(err, path, fix)) from None
        raise


def _plain_mode(path: Path) -> int:
    """The mode `open(path, "w")` would leave: an existing file's own, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    try:  # read without changing it (os.umask sets it, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def json_safe(obj):
    """`obj` with every non-finite float (NaN, inf: e.g. the mean of no kept rewards) as None, so
    the JSON written is valid JSON (`null`), which json.dumps' NaN/Infinity are not."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """`obj` as indented JSON (non-finite numbers as null), written atomically."""
    write_atomic(path, json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")


def read_json(path: Path, fix: str):
    """The JSON object in `path`; a file that is not valid JSON (or not UTF-8) is a StoreError naming
    it and `fix` (what to do about it)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path} is not valid JSON ({err}); {fix}") from None


QUARANTINE_FIX = "re-run with --quarantine-corrupt to move it aside (its unit is then recomputed)"


def reader_fix(path: Path) -> str:
    """The fix for a corrupt line met by a command that only reads a run folder (view, grade,
    compare): those have no --quarantine-corrupt; the command that wrote the folder has."""
    folder = Path(path).parent
    if Path(path).name == "summary.jsonl":
        return (f"re-run the `sealbench run` command that wrote {folder} (its manifest.json's `command`): "
                "it rebuilds the results table from results.jsonl")
    return (f"delete that line, or re-run the `sealbench run` command that wrote {folder} (its manifest.json's "
            "`command`) with --quarantine-corrupt: the line is moved aside and its unit recomputed")


def read_rows(path: Path, quarantine: bool = False, keyed: bool = False, fix: str = QUARANTINE_FIX) -> list[dict]:
    """Rows of a JSONL file. A torn final line is skipped (a final line that is a whole JSON object
    without its newline is a row); a corrupt line elsewhere raises
    StoreError naming the file, the line and `fix`, or (quarantine=True) is moved to `<file>.corrupt`.
    `keyed`: a row that is not an object with a `key` is corrupt too (a run folder's rows)."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn = lines.pop() if lines else b""  # after the last newline: empty, or a torn write
    if _whole_row(torn):  # a complete row whose newline is missing (an edit by hand): kept
        lines.append(torn)
        torn = b""
    rows, bad = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            if keyed and not (isinstance(row, dict) and isinstance(row.get("key"), str)):
                raise ValueError("it has no key")
            rows.append(row)
        except (UnicodeDecodeError, ValueError) as err:
            if not quarantine:
                raise StoreError(f"{path}:{n} is not a valid row ({err}); {fix}") from None
            bad.append(line)
    if bad:
        with open(path.with_name(path.name + ".corrupt"), "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        good = b"".join(json.dumps(r, default=str).encode() + b"\n" for r in rows)
        write_atomic(path, good.decode() + (torn.decode(errors="replace") if torn else ""))
    return rows


class RunFolder:
    """One run's folder, open for writing (locked) — see the module docstring."""

    def __init__(self, path: Path, quarantine: bool = False):
        self.path = Path(path)
        self.quarantine = quarantine
        self._lock: FileLock | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, reports_dir: str | Path, run_id: str, config: dict, quarantine: bool = False) -> "RunFolder":
        """Create (or reopen) and lock `reports_dir/run_id`. Raises StoreError when another
        process holds it, when it holds another config, or when it cannot be written."""
        root = Path(reports_dir)
        if root.exists() and not root.is_dir():
            raise StoreError(f"--reports-dir {root} is a file, not a folder; pass a folder")
        folder = cls(root / run_id, quarantine)
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create run folder {folder.path}: {err.strerror}") from None
        try:
            folder._acquire()
        except OSError as err:
            raise StoreError(_os_message(err, folder.path)) from None
        try:
            cfg_path = folder.path / "config.json"
            if cfg_path.exists():
                try:
                    held = json.loads(cfg_path.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise StoreError(f"{cfg_path} is not valid JSON ({err}); delete the folder {folder.path} "
                                     "(its rows are recomputed or reused from other folders) and run again") from None
                if held != json.loads(json.dumps(json_safe(config), default=str)):
                    raise StoreError(f"{folder.path} holds a run of another config; refusing to mix them")
            else:
                write_json(cfg_path, config)
            folder._sweep()
        except OSError as err:
            folder.close()
            raise StoreError(_os_message(err, folder.path)) from None
        except BaseException:
            folder.close()
            raise
        return folder

    def _acquire(self) -> None:
        lock_path = self.path / ".lock"
        self._lock = FileLock(lock_path, timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            holder = _read_holder(self.path / ".lock.json")
            self._lock = None
            raise StoreError(f"{self.path} is in use by {holder}; wait for that run to finish (or stop it), "
                             "then run again") from None
        write_json(self.path / ".lock.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                              "started": now_iso(), "command": " ".join(sys.argv)})

    def close(self) -> None:
        if self._lock is not None:
            (self.path / ".lock.json").unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _sweep(self) -> None:
        """Remove temp files left by killed writers; cut torn last lines before appending. Both at
        any depth: an RL run keeps its rows in `round_N/*.jsonl`."""
        try:
            for tmp in self.path.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            for jsonl in self.path.rglob("*.jsonl"):
                _cut_torn_tail(jsonl)
        except OSError as err:
            raise StoreError(_os_message(err, self.path)) from None

    # ------------------------------------------------------------------ rows
    def append(self, name: str, rows: list[dict]) -> None:
        """Append rows and fsync before returning: a kill never loses a row that was appended."""
        if not rows:
            return
        path = self.path / name
        data = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode("utf-8")
        try:
            (self.path / COMPLETE).unlink(missing_ok=True)  # new rows: the summary is stale
            size = _cut_torn_tail(path)  # a torn line left by a kill or a full disk: never append after it
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # nothing half-written: the file ends at its last whole row
                raise
            finally:
                os.close(fd)
        except OSError as err:
            raise StoreError(_os_message(err, path)) from None

    def rows(self, name: str) -> list[dict]:
        return read_rows(self.path / name, self.quarantine, keyed=True)

    def latest(self, name: str) -> dict[str, dict]:
        """The newest row of each key (a retried unit supersedes its failure)."""
        return {r["key"]: r for r in self.rows(name)}

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.path / "manifest.json", manifest)

    def finish(self, rows: list[dict], markdown: str, n_units: int | None = None) -> None:
        """Write the results table files, then COMPLETE last (a kill in between leaves none).
        COMPLETE holds the time and, with `n_units`, how many unit rows results.jsonl holds, so a
        reader can tell a truncated or deleted results.jsonl (`short_results`)."""
        from .schema import csv_text, jsonl_text

        (self.path / COMPLETE).unlink(missing_ok=True)
        write_atomic(self.path / "summary.jsonl", jsonl_text(rows))
        write_atomic(self.path / "summary.csv", csv_text(rows))
        write_atomic(self.path / "summary.md", markdown)
        units = f"{RESULTS}: {n_units} units\n" if n_units is not None else ""
        write_atomic(self.path / COMPLETE, now_iso() + "\n" + units + f"{FORMAT_LINE}{SUMMARY_FORMAT}\n")


FORMAT_LINE = "summary format: "


def summary_format(folder: Path) -> int:
    """The summary format a finished folder was written in (sealbench/schema.py lists them): the
    `summary format: N` line of its COMPLETE; 1 for a COMPLETE without one (before 2026-12-02),
    0 for a folder with only an old summary.json (needs `sealbench migrate`). Raises ValueError
    (one line: the file, the line, the fix) for a line that is not a format this version reads."""
    folder = Path(folder)
    try:
        lines = (folder / COMPLETE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0 if (folder / "summary.json").exists() else SUMMARY_FORMAT
    for line in lines:
        if line.startswith(FORMAT_LINE):
            value = line[len(FORMAT_LINE):].strip()
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{folder / COMPLETE}: {line!r} is not a summary format (a whole number >= 1); "
                                 f"write `{FORMAT_LINE}{SUMMARY_FORMAT}` there if the folder's files are this "
                                 "version's, or re-run the run's command")
            if int(value) > SUMMARY_FORMAT:
                raise ValueError(f"{folder / COMPLETE}: summary format {value} is not one this sealbench reads "
                                 f"(up to {SUMMARY_FORMAT}); read it with the sealbench version that wrote it "
                                 "(its manifest.json's versions), or re-run the run's command")
            return int(value)
    return 1


def short_results(folder: Path) -> str | None:
    """One line when a finished folder's results.jsonl holds fewer unit rows than its COMPLETE
    records (truncated, emptied or deleted after the run), with the fix; else None. Folders whose
    COMPLETE records no count (older ones, SEAL RL runs) are not checked. Reads only."""
    folder = Path(folder)
    try:
        lines = (folder / COMPLETE).read_text(encoding="utf-8", errors="replace").splitlines()
        want = next(int(x.split(":", 1)[1].split()[0]) for x in lines if x.startswith(f"{RESULTS}:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    path = folder / RESULTS
    keys = set()
    try:
        lines = path.read_bytes().split(b"\n")
        for n, line in enumerate(lines, 1):
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                if n < len(lines):
                    return None  # a corrupt whole line: reading the rows reports it, with its fix
                continue  # a torn last line
            if isinstance(row, dict) and "key" in row:
                keys.add(row["key"])
    except FileNotFoundError:
        pass
    except OSError:
        return None
    if len(keys) >= want:
        return None
    what = "is missing" if not path.exists() else f"holds {len(keys)} of the {want} unit rows"
    return (f"{path} {what} (its COMPLETE records {want}; truncated or deleted after the run); re-run the "
            f"`sealbench run` command that wrote {folder} (its manifest.json's `command`) to rebuild it "
            "(missing units are reused from other runs or recomputed)")


def _whole_row(tail: bytes) -> bool:
    """Whether bytes after a file's last newline are a whole JSON object (a row missing only its
    newline), not a torn write."""
    if not tail.strip():
        return False
    try:
        return isinstance(json.loads(tail.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def _cut_torn_tail(path: Path) -> int:
    """Cut a torn last line (bytes after the last newline) off `path`; its size after. 0 if absent.
    A last line that is a whole row missing its newline gets the newline instead (never a lost unit)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if not size:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        if _whole_row(data[keep:]):
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            return size + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return keep


def _os_message(err: OSError, path: Path, fix: str | None = None) -> str:
    """One line for an OSError writing a run folder (or a report): what, where, and the fix
    (`fix`: a command's own, e.g. "pass --out a folder elsewhere")."""
    import errno

    if err.errno == errno.ENOSPC:
        return (f"no space left on the device writing {path}; free some space (or write to another folder), "
                "then re-run the same command (finished rows are kept)" if fix is None else
                f"no space left on the device writing {path}; free some space or {fix}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {path}: {err.strerror} (read-only?); "
                + (fix or "make its folder writable or pick another folder, then re-run the same command"))
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return (f"cannot use {path}: a file stands where a folder is needed ({err.strerror}); move that file "
                "away or " + (fix or "pick another folder, then re-run the same command"))
    return f"cannot write {path}: {err.strerror or err}; " + (fix or "fix that path, then re-run the same command")


def holder_if_in_use(folder: Path) -> str | None:
    """Who holds `folder`'s lock right now (a run writing it), or None. Writes nothing: a folder
    without a `.lock` file (or one that cannot be opened) is not in use."""
    lock_path = Path(folder) / ".lock"
    if not lock_path.exists():
        return None
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return _read_holder(Path(folder) / ".lock.json")
    except OSError:
        return None
    lock.release()
    return None


def _read_holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['started']} ({h['command'][:80]})"
    except (OSError, ValueError, KeyError):
        return "another process"


def cached_rows(reports_dir: str | Path, name: str, exclude: Path | None = None) -> dict[str, tuple[str, dict]]:
    """key -> (run id, row) of every successful row in `name` of every run folder under
    `reports_dir` (any depth), newest file last. Read-only; unreadable folders are skipped."""
    out: dict[str, tuple[str, dict]] = {}
    root = Path(reports_dir)
    if not root.is_dir():
        return out
    files = sorted(root.rglob(name), key=lambda p: p.stat().st_mtime)
    for path in files:
        if exclude is not None and path.parent == exclude:
            continue
        try:
            rows = read_rows(path)
        except (StoreError, OSError):
            continue
        for r in rows:
            if r.get("status", "ok") == "ok" and not r.get("error") and "key" in r:
                out[r["key"]] = (path.parent.name, r)
    return out


# ----------------------------------------------------------------------------------- manifest
def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("sealbench", "torch", "transformers", "numpy", "pydantic", "pandas", "scipy", "lm_eval", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ("+dirty" if dirty else "")) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_load() -> dict:
    import torch

    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"torch_threads": torch.get_num_threads(), "loadavg_1m": load, "cpu_count": os.cpu_count()}


def build_manifest(config: dict, models: dict, device: str, extra: dict | None = None) -> dict:
    """Everything needed to say what produced a run's numbers."""
    return {"config": config, "seed": config.get("seed"), "models": models, "device": device,
            "device_name": device_name(device), "versions": package_versions(), "git_commit": git_commit(),
            "command": " ".join(sys.argv), "machine": machine_load(), "hostname": platform.node(),
            "started": now_iso(), "unix_time": time.time(), **(extra or {})}

