"""The skip policy (skip_policy.py) on a throw-away suite: an unexpected skip fails the run with its
reason listed, an allowed one (option or environment) does not, xfail is no skip, and without the
option a skip changes nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SUITE = '''
import pytest

def test_runs():
    assert True

def test_needs_gpu():
    pytest.skip("needs a GPU (CUDA)")

def test_needs_extra():
    pytest.importorskip("surely_not_installed_pkg", reason="the extra is not installed")

@pytest.mark.xfail(reason="known")
def test_known():
    assert False
'''


def _run(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(SUITE)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEALBENCH_")}
    environ.update(env or {}, PYTHONPATH=str(Path(__file__).parent), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "skip_policy", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path), *args],
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)


def test_an_unexpected_skip_fails_the_run_and_is_named(tmp_path):
    out = _run(tmp_path, "--fail-on-unexpected-skip")
    assert out.returncode == 1, out.stdout
    assert "SKIPPED test_suite.py::test_needs_extra: the extra is not installed" in out.stdout
    assert "test_suite.py::test_needs_gpu:" not in out.stdout.split("unexpected skips")[-1]  # GPU: expected
    assert "1 passed, 2 skipped, 1 xfailed" in out.stdout


def test_allowed_skips_pass(tmp_path):
    assert _run(tmp_path, "--fail-on-unexpected-skip", "--allow-skip", "extra is not").returncode == 0
    env = {"SEALBENCH_FAIL_ON_SKIP": "1", "SEALBENCH_ALLOWED_SKIPS": "no such reason\nnot installed$"}
    assert _run(tmp_path, env=env).returncode == 0
    assert _run(tmp_path, env={"SEALBENCH_FAIL_ON_SKIP": "1"}).returncode == 1


def test_without_the_option_a_skip_changes_nothing(tmp_path):
    out = _run(tmp_path)
    assert out.returncode == 0 and "unexpected skips" not in out.stdout
