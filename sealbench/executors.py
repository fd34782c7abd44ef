"""Where batches of units run. The runner keeps the plan, the unit cache and the single writer of the
run folder; an executor only turns batches into rows.

`LocalExecutor` runs every batch in this process on its engines, one model per engine name
("base", "policy:<contender>"), each engine built the first time a batch needs it. A batch is a
list of units that share an engine, at most K of them adapting (K = the engine's slots).
`RayExecutor` (executors_ray.py, `--executor ray`) runs the same batches on Ray workers, one per
GPU of a machine or a cluster (docs/scale-out.md). `make_executor` picks one from the config.
"""
from __future__ import annotations

import time
from typing import Iterator

from .config import ConfigError
from .engine.inner_loop import Engine
from .store import machine_load, now_iso


def engine_name(unit) -> str:
    """Which model a unit adapts: its contender's SEAL policy, or the base model."""
    return f"policy:{unit.contender.name}" if unit.contender.edits == "policy" else "base"


def batches(units: list, k: int) -> list[list]:
    """Units in plan order, at most k adapting units (and 4k in all) per batch."""
    out, current, adapting = [], [], 0
    for u in units:
        needs_slot = bool(u.contender.adapt)
        if current and (adapting + needs_slot > k or len(current) >= 4 * k):
            out.append(current)
            current, adapting = [], 0
        current.append(u)
        adapting += needs_slot
    if current:
        out.append(current)
    return out


def finish_rows(batch: list, rows: list[dict], seconds: float, fingerprints: dict) -> list[dict]:
    """Stamp rows with their unit key, machine, time and (policy contenders) the policy fingerprint."""
    for u, row in zip(batch, rows):
        row.update(key=u.key, machine=machine_load(), finished=now_iso(), wall_s=seconds / len(batch))
        if u.contender.edits == "policy":
            row["policy_fingerprint"] = fingerprints["policy:" + u.contender.name]
    return rows


class LocalExecutor:
    """Batches in this process. `engines` maps an engine name to an Engine or a callable making one."""

    def __init__(self, family, config, grader, engines: dict, fingerprints: dict):
        self.family, self.config, self.grader = family, config, grader
        self.engines, self.fingerprints = engines, fingerprints

    def engine(self, name: str) -> Engine:
        if not isinstance(self.engines[name], Engine):
            self.engines[name] = self.engines[name]()
        return self.engines[name]

    def run(self, pending: list, edits: dict) -> Iterator[tuple[list, list[dict]]]:
        """(units, rows) as units finish, engine by engine. A family with `stream` takes all of an
        engine's units as one queue (its slots reused as edits finish); others run in batches."""
        for name in dict.fromkeys(engine_name(u) for u in pending):
            engine = self.engine(name)
            mine = [u for u in pending if engine_name(u) == name]
            stream = getattr(self.family, "stream", None)
            if stream is not None:
                groups = stream(engine, mine, edits, self.config, self.grader)
            else:
                groups = ((batch, self.family.run(engine, batch, edits, self.config, self.grader))
                          for batch in batches(mine, engine.k))
            start = time.perf_counter()
            for batch, rows in groups:
                yield batch, finish_rows(batch, rows, time.perf_counter() - start, self.fingerprints)
                start = time.perf_counter()

    def close(self) -> None:
        for engine in self.engines.values():
            if isinstance(engine, Engine):
                engine.close()


class ExecutorError(RuntimeError):
    """Batches could not run (a worker kept dying, a cluster cannot be reached); one line."""


RAY_MISSING = "--executor ray needs Ray: pip install 'sealbench[ray]'"
RAY_SETTINGS = ("ray_address", "gpus_per_worker", "workers")


def check_executor(config) -> None:
    """Raise one ConfigError line, before any model loads, when the config's executor cannot run:
    Ray settings without `--executor ray`, or `--executor ray` where Ray is not installed."""
    if config.executor == "local":
        given = [f"--{n.replace('_', '-')}" for n in RAY_SETTINGS if getattr(config, n) is not None]
        if given:
            raise ConfigError(f"{' '.join(given)} only apply with --executor ray; add --executor ray or drop them")
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
