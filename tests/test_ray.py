"""`--executor ray`: batches on Ray workers give the run folder a local run gives (rows, summary),
a worker that dies mid-run loses and duplicates nothing, SEAL's RL rewards on workers equal local
ones, and without Ray the flag is one line. One local Ray (2 CPUs) for the module; the workers
load the tiny model from a checkpoint dir themselves."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import MADE_UP, MADE_UP_2, write_data_dir
from sealbench.cli import main
from sealbench.config import RunConfig
from sealbench.runner import run
from sealbench.store import RESULTS, read_rows

QUIET = dict(progress=False, say=lambda m: None)
VOLATILE = ("timing", "machine", "finished", "wall_s", "train")   # when and where, not what


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'sealbench[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sealbench.engine.models import tiny_random_model

    root = tmp_path_factory.mktemp("ray")
    tiny = tiny_random_model(seed=0)
    tiny.model.save_pretrained(root / "ckpt")
    tiny.tokenizer.save_pretrained(root / "ckpt")
    return root, write_data_dir(root / "data", [MADE_UP, MADE_UP_2])


def cfg(root: Path, data: Path, reports: str, **kw) -> RunConfig:
    base = dict(model=str(root / "ckpt"), contenders=["base", "passage"], n_passages=2, epochs=1, max_answer_tokens=4,
                seed=0, device="cpu", data_dir=str(data), reports_dir=str(root / reports), edits_per_batch=1)
    return RunConfig(**{**base, **kw})


def stripped(folder: Path) -> list[dict]:
    rows = sorted(read_rows(folder / RESULTS), key=lambda r: r["key"])
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def summary(folder: Path) -> list[dict]:
    rows = [json.loads(x) for x in (folder / "summary.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "written"} for r in rows
            if not r["metric"].endswith("_s") and r["metric"] not in ("seconds_per_edit", "peak_mem_mb")]


def test_ray_workers_write_the_run_folder_a_local_run_writes(ray_cluster, setup):
    root, data = setup
    local = run(cfg(root, data, "local"), **QUIET)
    remote = run(cfg(root, data, "ray", executor="ray", workers=2), **QUIET)
    assert remote.folder.name == local.folder.name  # machine settings are not part of the run's id
    assert remote.n_computed == local.n_computed == 4 and (remote.folder / "COMPLETE").exists()
    assert stripped(remote.folder) == stripped(local.folder)
    assert summary(remote.folder) == summary(local.folder)
    assert {r["machine"].get("executor") for r in read_rows(remote.folder / RESULTS)} == {"ray"}
    again = run(cfg(root, data, "ray", executor="ray", workers=2), **QUIET)
    assert again.n_computed == 0  # resume: nothing pending, no worker started


def test_a_worker_dying_mid_run_loses_and_duplicates_nothing(ray_cluster, setup, monkeypatch):
    """The second batch started (by either worker) kills its worker (os._exit): it is queued again on
    a replacement worker; every planned unit ends up with exactly one row."""
    from sealbench import executors_ray

    root, data = setup
    marks = root / "marks"
    marks.mkdir()
    real = executors_ray.run_batch

    def dying(engine, config, batch, edits, fingerprints):
        n = 0
        while True:  # call-0, call-1, ...: one number per call, whichever worker makes it
            try:
                os.close(os.open(marks / f"call-{n}", os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                n += 1
        if n == 1:
            os._exit(1)
        return real(engine, config, batch, edits, fingerprints)

    pools = []
    real_pool = executors_ray.WorkerPool

    def keep(*a, **k):
        pools.append(real_pool(*a, **k))
        return pools[-1]
    monkeypatch.setattr(executors_ray, "run_batch", dying)
    monkeypatch.setattr(executors_ray, "WorkerPool", keep)
    r = run(cfg(root, data, "dying", executor="ray", workers=2), **QUIET)
    assert sorted(p.name for p in marks.iterdir()) == ["call-0", "call-1", "call-2"]  # 2 batches, 1 run twice
    assert pools[0].requeued == 1 and pools[0].replaced == 1
    keys = [row["key"] for row in read_rows(r.folder / RESULTS)]
    assert len(keys) == len(set(keys)) == r.n_units == 4 and (r.folder / "COMPLETE").exists()


def test_rl_rewards_on_ray_workers_equal_local_rewards(ray_cluster, setup):
    """SEAL's RL loop with --executor ray: rewards from workers, policy SFT on the driver; two rounds,
    so round 2's workers must load round 1's adapter."""
    from sealbench import rl
    from sealbench.registry import rl_preset

    root, data = setup
    base = rl_preset("tiny", model=str(root / "ckpt"), device="cpu", max_new_tokens=8, max_answer_tokens=4,
                     edits_per_batch=1, rounds=2, n_items=1)
    rewards = {}
    for name, extra in (("rl-local", {}), ("rl-ray", dict(executor="ray", workers=2))):
        policy = rl.train(base.updated(**extra), root / name, data, progress=False, say=lambda m: None)
        rewards[name] = [sorted((x["key"], x["rewards"]) for x in read_rows(policy.folder / f"round_{r}" / "rewards.jsonl"))
                         for r in (1, 2)]
        rewards[name + ":fp"] = policy.fingerprint
    assert rewards["rl-local"] == rewards["rl-ray"] and rewards["rl-local:fp"] == rewards["rl-ray:fp"]


def test_without_ray_the_flag_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    data = write_data_dir(tmp_path / "data", [MADE_UP])
    code = main(["run", "--contender", "base", "--n-passages", "1", "--data-dir", str(data), "--reports-dir",
                 str(tmp_path / "reports"), "--model", str(tmp_path / "no-model-needed"), "--executor", "ray",
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["sealbench: error: --executor ray needs Ray: pip install 'sealbench[ray]'"]
    assert not (tmp_path / "reports").exists()


def test_ray_settings_without_the_ray_executor_are_refused(tmp_path, capsys):
    data = write_data_dir(tmp_path / "data", [MADE_UP])
    code = main(["run", "--contender", "base", "--n-passages", "1", "--data-dir", str(data), "--reports-dir",
                 str(tmp_path / "reports"), "--workers", "2"])
    assert code == 2 and "--workers only apply with --executor ray" in capsys.readouterr().err
