"""Shared fixtures: the real embedded model (loaded once per session), small made-up data dirs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent

# A passage of facts no pretrained model can know, with questions whose answers are unguessable.
MADE_UP = {
    "title": "Zorbian glass",
    "context": ("Zorbian glass is a rare blue material invented in 1873 by the chemist Elodie Marwick in "
                "the town of Pellharrow. It is made by melting quartz sand with crushed moonstone. "
                "The largest Zorbian glass window is in the Marwick Cathedral and has 412 panes."),
    "questions": [
        {"question": "Who invented Zorbian glass?", "answer": "Elodie Marwick"},
        {"question": "In what year was Zorbian glass invented?", "answer": "1873"},
        {"question": "In which town was Zorbian glass invented?", "answer": "Pellharrow"},
        {"question": "How many panes does the largest Zorbian glass window have?", "answer": "412"},
    ],
}
MADE_UP_2 = {
    "title": "Quillon river",
    "context": ("The Quillon river rises on Mount Havrel and flows 318 kilometres to the Sea of Tarn. "
                "Its largest bridge, the Osk Bridge, was designed by the engineer Bram Tolvey."),
    "questions": [
        {"question": "Where does the Quillon river rise?", "answer": "Mount Havrel"},
        {"question": "Who designed the Osk Bridge?", "answer": "Bram Tolvey"},
    ],
}


def shared_data_dir() -> Path | None:
    path = Path(os.environ.get("SEALBENCH_DATA_DIR") or REPO.parent / "shared" / "data")
    return path if (path / "squad").exists() else None


@pytest.fixture
def real_data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("the shared data dir is missing: set SEALBENCH_DATA_DIR to ../shared/data")
    return path


def write_data_dir(root: Path, passages: list[dict], notes: list[dict] | None = None) -> Path:
    """A data dir in the shape sealbench reads: squad/*.json and optionally notes/teacher.json."""
    (root / "squad").mkdir(parents=True, exist_ok=True)
    (root / "squad" / "squad_v1.1_dev_by_passage.json").write_text(json.dumps(passages))
    (root / "squad" / "squad_v1.1_train_pool100.json").write_text(json.dumps(passages))
    if notes is not None:
        (root / "notes").mkdir(exist_ok=True)
        (root / "notes" / "teacher.json").write_text(json.dumps(notes))
    return root


@pytest.fixture
def made_up_data(tmp_path) -> Path:
    return write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])


@pytest.fixture(scope="session")
def embedded():
    """The real embedded model (SmolLM2-135M-Instruct), converted once and cached."""
    from sealbench.engine.models import load_model

    return load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def tiny():
    """A tiny randomly initialised Llama with the embedded tokenizer: fast unit tests."""
    from sealbench.engine.models import tiny_random_model

    return tiny_random_model(seed=0)


# CI fails on a skip it does not expect (skip_policy.py: --fail-on-unexpected-skip, --allow-skip)
from skip_policy import (pytest_addoption, pytest_runtest_logreport, pytest_sessionfinish,  # noqa: E402,F401
                         pytest_terminal_summary)


def pytest_configure(config):
    # Under load a 2-core box collapses with 2 OpenMP threads; pick by the current load.
    from sealbench.engine.models import set_threads

    set_threads("auto")
