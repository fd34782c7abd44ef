"""Batches on Ray actors: one worker per GPU (or CPU slot) of a machine or a cluster
(docs/scale-out.md).

The driver keeps what makes a run folder a run folder -- the plan, the unit cache, the self-edits and
the single locked writer -- and ships each batch to a free worker as the batch's units, the self-edit
rows of those units and the resolved config. A worker builds each engine the first time a batch
needs it (the base model from `config.model`, a SEAL policy from the picklable `Policy` /
`ReadyPolicy` the runner passes, both via their own `load`) and keeps it. A batch whose worker
died (`RayActorError`: killed, crashed, out of memory, its node gone) is queued again and a
replacement worker is started, so every unit gets exactly one row.

`WorkerPool` is the part that knows Ray: engines described by an `EngineSpec`, tasks that are
module-level functions `fn(engine, *args)`, results in completion order. `RayExecutor` (runs) and
`RLRewards` (SEAL's RL rewards, rl/loop.py) are thin users of it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import ray
from ray.exceptions import NodeDiedError, RayActorError, RayTaskError, WorkerCrashedError

from .config import ConfigError, LoRASettings, device_kind
from .engine.inner_loop import Engine
from .executors import ExecutorError, batches, engine_name, finish_rows

WORKER_DIED = (RayActorError, WorkerCrashedError, NodeDiedError)   # the batch is fine; its worker is not
MAX_ATTEMPTS = 3            # a batch that took down this many workers stops the run (it is the cause)
FORWARDED_ENV = ("HF_", "SEALBENCH_", "TRANSFORMERS_", "TOKENIZERS_", "OPENAI_")   # to a cluster's workers


class WorkerError(ExecutorError):
    """A batch kept killing its workers (one line: how often, the last error, the likely fix)."""


# ------------------------------------------------------------------------------ in the worker
@dataclass(frozen=True)
class EngineSpec:
    """How a worker builds one engine: `model` is a load_model spec (name or absolute path) or an
    object with `.load(device, dtype)` (Policy, ReadyPolicy); `fingerprint`, when given, must be
    what the worker loads (the same weights on every node)."""
    key: str
    model: object
    device: str
    dtype: str
    lora: LoRASettings
    n_slots: int | None = None
    gen_batch_size: int | None = None
    fingerprint: str | None = None

    def build(self) -> Engine:
        from .engine.models import ModelLoadError, load_model

        if isinstance(self.model, str):
            loaded = load_model(self.model, self.device, self.dtype)
            if self.fingerprint and loaded.fingerprint != self.fingerprint:
                raise ModelLoadError(f"worker on {platform.node()} loaded {self.model} with weights "
                                     f"{loaded.fingerprint}, the driver has {self.fingerprint}; give every node "
                                     "the same model files")
        else:
            loaded = self.model.load(self.device, self.dtype)
        return Engine(loaded, self.lora, self.n_slots, self.gen_batch_size)


class Worker:
    """One Ray actor: engines by spec key, built on first use and kept until `forget`."""

    def __init__(self, threads: str):
        from .engine.models import set_threads

        set_threads(threads)
        self.engines: dict[str, Engine] = {}

    def call(self, spec: EngineSpec, fn: Callable, *args):
        if spec.key not in self.engines:
            self.engines[spec.key] = spec.build()
        return fn(self.engines[spec.key], *args)

    def forget(self, key: str) -> None:
        engine = self.engines.pop(key, None)
        if engine is not None:
            engine.close()


def slots(engine: Engine) -> int:
    return engine.k


def run_batch(engine: Engine, config, batch: list, edits: dict, fingerprints: dict) -> list[dict]:
    """One batch of a run, in the worker: the family by task name, the grader rebuilt, rows stamped."""
    from . import registry

    start = time.perf_counter()
    rows = registry.family(config.task).run(engine, batch, edits, config, _grader(config.grader))
    rows = finish_rows(batch, rows, time.perf_counter() - start, fingerprints)
    for row in rows:
        row["machine"] = {**row["machine"], "host": platform.node(), "executor": "ray"}
    return rows


def rl_reward(engine: Engine, cfg, batch: list[tuple]) -> list[dict]:
    """One reward batch of SEAL's RL round, in the worker (the family's `rl.reward`)."""
    from . import registry

    return registry.family(cfg.task).rl.reward(engine, batch, cfg)


_GRADERS: dict = {}


def _grader(name: str):
    from .grading import get_grader

    if name not in _GRADERS:
        _GRADERS[name] = get_grader(name)
    return _GRADERS[name]


# ------------------------------------------------------------------------------ on the driver
class WorkerPool:
    """Ray actors with `num_gpus=gpus_per_worker` each. `map` runs tasks on free workers and yields
    (index, result) as they finish; a task whose worker died runs again on a replacement."""

    def __init__(self, address: str | None, workers: int | None, gpus_per_worker: float | None,
                 device_kind_: str, threads: str = "auto"):
        self.owns_ray = _connect(address)
        try:
            self._size(workers, gpus_per_worker, device_kind_, threads)
        except BaseException:
            if self.owns_ray:
                ray.shutdown()
            raise
        self._remote = ray.remote(Worker)
        self.actors = [self._start() for _ in range(self.n_workers)]
        self.running: dict = {}      # ObjectRef -> (actor, task index): what is in flight now
        self.requeued = 0            # tasks run again because their worker died
        self.replaced = 0            # workers started to replace dead ones

    def _size(self, workers, gpus_per_worker, device_kind_, threads) -> None:
        """Workers, GPUs and CPUs per worker, torch threads: from the settings and the cluster."""
        resources = ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
        if device_kind_ == "cuda" and not gpus:
            raise ConfigError("--device resolves to cuda on this machine but the Ray cluster has no GPU; "
                              "pass --device cpu, or join a cluster with GPUs (--ray-address)")
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if device_kind_ == "cuda" else 0.0
        if device_kind_ == "cuda" and not gpus_per_worker:
            raise ConfigError("--device resolves to cuda here but --gpus-per-worker 0 gives the workers no GPU; "
                              "use --gpus-per-worker 1, or --device cpu")
        if workers is None:
            workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 2
        if gpus_per_worker * workers > gpus + 1e-9:
            raise ConfigError(f"--workers {workers} x --gpus-per-worker {gpus_per_worker:g} needs "
                              f"{gpus_per_worker * workers:g} GPUs; the Ray cluster has {gpus:g}")
        self.gpus_per_worker, self.n_workers = gpus_per_worker, workers
        # GPU workers reserve one CPU each; CPU workers share the cluster's CPUs (one torch thread per CPU).
        self.cpus_per_worker = 1.0 if gpus_per_worker else max(0.01, cpus / workers)
        self.threads = threads if threads != "auto" or gpus_per_worker else str(max(1, int(self.cpus_per_worker)))

    def _start(self):
        return self._remote.options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                    max_concurrency=1).remote(self.threads)

    def _replace(self, actor):
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        self.actors.remove(actor)
        fresh = self._start()
        self.actors.append(fresh)
        self.replaced += 1
        return fresh

    def map(self, tasks: list[tuple]) -> Iterator[tuple[int, object]]:
        """tasks: [(EngineSpec, fn, args)] -> (index, fn(engine, *args)) in completion order.
        An exception raised by fn is raised here as itself (a ModelLoadError stays one line)."""
        queue, attempts, idle = deque(range(len(tasks))), Counter(), list(self.actors)
        try:
            while queue or self.running:
                while queue and idle:
                    actor, i = idle.pop(0), queue.popleft()
                    spec, fn, args = tasks[i]
                    self.running[actor.call.remote(spec, fn, *args)] = (actor, i)
                (ref,), _ = ray.wait(list(self.running), num_returns=1)
                actor, i = self.running.pop(ref)
                try:
                    result = ray.get(ref)
                except WORKER_DIED as err:
                    attempts[i] += 1
                    if attempts[i] >= MAX_ATTEMPTS:
                        raise WorkerError(f"one batch took down {attempts[i]} Ray workers in a row (last: "
                                          f"{(str(err).splitlines() or [''])[0][:160]}); out of memory? lower "
                                          "--edits-per-batch; finished batches are saved, re-run to resume") from err
                    queue.appendleft(i)
                    self.requeued += 1
                    idle.append(self._replace(actor))
                    continue
                except RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else err) from err  # err: the worker's traceback
                idle.append(actor)
                yield i, result
        finally:
            self.running.clear()

    def warm(self, spec: EngineSpec) -> int:
        """Build `spec`'s engine on every worker at once; its K (the smallest, if workers differ)."""
        return min(k for _, k in self.map([(spec, slots, ())] * len(self.actors)))

    def forget(self, key: str) -> None:
        ray.get([a.forget.remote(key) for a in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors = []
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()


def _connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` (auto | HOST:PORT | ray://...; None: $RAY_ADDRESS, else a
    new local one). True when this process started Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address in (None, "local"):  # workers are children of this process: they inherit its environment
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR)
        else:                           # a cluster's workers get this process's sealbench/HF settings
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
            ray.init(address=address, logging_level=logging.ERROR, runtime_env={"env_vars": env} if env else None)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise ConfigError(f"--ray-address {address}: could not join a Ray cluster "
                          f"({(str(err).splitlines() or [''])[0][:200]}); start one with `ray start --head` (a "
                          "cluster with token authentication also needs RAY_AUTH_MODE=token here) or leave "
                          "--ray-address unset for a Ray on this machine") from None
    return True


def _absolute(spec: str) -> str:
    """A model spec that is a path, as an absolute path (workers do not share the driver's cwd)."""
    from .engine.models import MODELS

    path = Path(spec).expanduser()
    return str(path.resolve()) if spec not in MODELS and path.exists() else spec


def _shippable(policy):
    """A Policy / ReadyPolicy whose files a worker finds from any working directory."""
    import copy

    if dataclasses.is_dataclass(policy):   # Policy: a finished RL run folder
        return dataclasses.replace(policy, folder=Path(policy.folder).resolve(),
                                   config=policy.config.model_copy(update={"model": _absolute(policy.config.model)}))
    ready = copy.copy(policy)              # ReadyPolicy: a checkpoint
    ready.spec = _absolute(ready.spec)
    return ready


class RayExecutor:
    """The executor interface of `LocalExecutor` (executors.py) on Ray workers. `engines` stays on
    the driver for what the driver itself does (sampling self-edits, edits.py); batches never use it."""

    def __init__(self, family, config, grader, engines: dict, fingerprints: dict, policies: dict | None = None):
        self.family, self.config, self.grader = family, config, grader
        self.engines, self.fingerprints = engines, fingerprints
        self.kind, dtype = device_kind(config.device, config.dtype)
        common = dict(device=self.kind, dtype=dtype, lora=config.lora_settings(), n_slots=config.edits_per_batch,
                      gen_batch_size=config.gen_batch_size)
        self.specs = {"base": EngineSpec("base", _absolute(config.model), fingerprint=fingerprints.get("base"), **common)}
        for name, policy in (policies or {}).items():
            self.specs["policy:" + name] = EngineSpec("policy:" + name, _shippable(policy), **common)
        self.pool: WorkerPool | None = None   # Ray starts with the first batch (a resumed run may have none)

    def run(self, pending: list, edits: dict) -> Iterator[tuple[list, list[dict]]]:
        """(batch, rows) for every batch of `pending` as workers finish them (any order)."""
        c = self.config
        if self.pool is None:
            self.pool = WorkerPool(c.ray_address, c.workers, c.gpus_per_worker, self.kind, c.threads)
        config, fingerprints = ray.put(c), ray.put(self.fingerprints)
        tasks, batch_of = [], []
        for name in dict.fromkeys(engine_name(u) for u in pending):
            spec = self.specs[name]
            k = self.pool.warm(spec)
            for batch in batches([u for u in pending if engine_name(u) == name], k):
                mine = {u.key: edits[u.key] for u in batch if u.key in edits}
                tasks.append((spec, run_batch, (config, batch, mine, fingerprints)))
                batch_of.append(batch)
        for i, rows in self.pool.map(tasks):
            yield batch_of[i], rows

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        for engine in self.engines.values():
            if isinstance(engine, Engine):
                engine.close()


class RLRewards:
    """SEAL's RL rewards (rl/loop.py `_round`) on Ray workers. Each round's policy is the base model
    with rounds 1..r-1 merged (`Policy.load`); a worker builds it once per round."""

    def __init__(self, cfg):
        kind, dtype = device_kind(cfg.device, cfg.dtype)
        self.cfg, self.kind, self.dtype = cfg, kind, dtype
        self.pool: WorkerPool | None = None   # Ray starts with the first round that has rewards to compute
        self.spec: EngineSpec | None = None

    def start_round(self, folder: Path, r: int, fingerprint: str) -> int:
        """The policy of round r's rewards on every worker; returns the workers' K."""
        import json

        from .rl.policy import Policy

        rounds = [json.loads((Path(folder) / f"round_{n}" / "policy.json").read_text()) for n in range(1, r)]
        policy = _shippable(Policy(Path(folder), self.cfg, fingerprint, rounds))
        if self.pool is None:
            self.pool = WorkerPool(self.cfg.ray_address, self.cfg.workers, self.cfg.gpus_per_worker, self.kind)
        if self.spec is not None:
            self.pool.forget(self.spec.key)   # last round's policy
        self.spec = EngineSpec(f"rl:{r}:{fingerprint}", policy, self.kind, self.dtype, self.cfg.inner_lora,
                               self.cfg.edits_per_batch)
        return self.pool.warm(self.spec)

    def rewards(self, batches_: list[list[tuple]]) -> Iterator[tuple[int, list[dict]]]:
        """(index, rewards of batches_[index]) in completion order."""
        cfg = ray.put(self.cfg)
        return self.pool.map([(self.spec, rl_reward, (cfg, b)) for b in batches_])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
