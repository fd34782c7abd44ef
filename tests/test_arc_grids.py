"""ARC grids and augmentations: text format, strict parsing, validation, invertible transforms."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealbench.families.arc import augment as A
from sealbench.families.arc.grids import (GridError, answer_text, grid_to_text, pair_text, parse_grid, query_text,
                                 task_prompt, validate_grid)

REPO = Path(__file__).resolve().parents[1]


@st.composite
def grids(draw, max_side=8):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    cells = draw(st.lists(st.integers(0, 9), min_size=h * w, max_size=h * w))
    return tuple(tuple(cells[r * w:(r + 1) * w]) for r in range(h))


def test_text_format():
    g = ((0, 1, 2), (3, 4, 5))
    assert grid_to_text(g) == "[0 1 2]\n[3 4 5]"
    assert pair_text(g, g[:1]) == "[0 1 2]\n[3 4 5] -> [0 1 2]#\n"
    assert query_text(g) == "[0 1 2]\n[3 4 5] -> "
    assert answer_text(g) == "[0 1 2]\n[3 4 5]#"
    assert task_prompt([(g, g)], g).endswith(" -> ") and task_prompt([(g, g)], g).count("#") == 1


@given(grids(max_side=30))
@settings(max_examples=60, deadline=None)
def test_parse_roundtrip(g):
    assert parse_grid(answer_text(g)) == g
    assert parse_grid(answer_text(g) + "\n[1 2]\nmore text after the end marker") == g


@pytest.mark.parametrize("text", [
    None, "", "   ", "#", "I think the answer is [1 2]#", "[1 2]\n[3]#", "[1 2]\n[3 4 5]#",
    "[1 2]\nblah\n[3 4]#", "[10 2]#", "[1, 2]#", "[1 2", "[a b]#", "[]#", "[-1 2]#",
    "\n".join(["[1]"] * 31) + "#", "[" + " ".join(["1"] * 31) + "]#",
])
def test_parse_malformed_gives_none(text):
    assert parse_grid(text) is None


def test_parse_tolerates_whitespace_and_missing_end():
    assert parse_grid("  [1 2]  \n\n [3  4]\n#\n") == ((1, 2), (3, 4))
    assert parse_grid("[1 2]\n[3 4]") == ((1, 2), (3, 4))   # no end marker (EOS) is fine


@pytest.mark.parametrize("g,msg", [
    ([], "non-empty"), ([[1, 2], [3]], "not rectangular"), ([[1, 10]], "cell \\(0,1\\) is 10"),
    ([[1, "2"]], "cells must be ints"), ([[True]], "cells must be ints"), ([[0] * 31], "31 columns"),
    ([[0]] * 31, "31 rows"), ([[]], "row 0"),
])
def test_validation_messages_name_the_grid(g, msg):
    with pytest.raises(GridError, match=msg) as err:
        validate_grid(g, "task abc123 train[0].input")
    assert "task abc123 train[0].input" in str(err.value)


@pytest.mark.parametrize("t", A.ALL_TRANSFORMS, ids=lambda t: t.name)
@given(g=grids())
@settings(max_examples=40, deadline=None)
def test_inverse_of_transform_is_identity(t, g):
    out = t(g)
    assert len({len(r) for r in out}) == 1           # still rectangular
    assert t.inverse(out) == g
    if t.geometric:                                  # bijections: both ways round
        assert t(t.inverse(g)) == g


def test_families_and_names():
    assert [t.name for t in A.FAMILIES["size"]] == ["upscale_2x", "double_height", "double_width"]
    assert [t.name for t in A.FAMILIES["repeat"]] == ["tile_v", "tile_h", "tile_2x2"]
    assert len(A.FAMILIES["chain"]) == 7 and all(t.name.endswith("+upscale_2x") for t in A.FAMILIES["chain"])
    assert {"rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "reflect_down",
            "translate_right"} <= {t.name for t in A.FAMILIES["basic"]}
    assert len(A.BY_NAME) == len(A.ALL_TRANSFORMS)   # names unique
    assert A.transforms_for()[0] is A.IDENTITY and len(A.transforms_for()) == 1
    assert len(A.transforms_for(True, True, True, True)) == len(A.ALL_TRANSFORMS)


def test_big_grids_dropped():
    g = tuple(tuple([1] * 16) for _ in range(16))
    assert A.BY_NAME["upscale_2x"].apply(g) is None          # 32x32
    assert A.BY_NAME["rot90"].apply(g) == A.rot90(g)
    assert A.BY_NAME["tile_h"].apply(tuple(tuple([1] * 15) for _ in range(3))) is not None  # 3x30 fits


@given(g=grids(), seed=st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_color_permutation_fixes_zero_and_inverts(g, seed):
    import random
    perm = A.random_color_permutation(random.Random(seed))
    assert perm[0] == 0 and sorted(perm) == list(range(10))
    assert A.permute_colors(A.permute_colors(g, perm), A.invert_permutation(perm)) == g


def test_dedup_keeps_first_occurrence_order():
    items = ["b", "a", "b", "c", "a"]
    assert A.dedup(items, key=lambda x: x) == ["b", "a", "c"]


def test_ttt_data_independent_of_hash_seed():
    code = ("import hashlib; from sealbench.families.arc.data import mini_task; "
            "from sealbench.families.arc.ttt import build_ttt_data; from sealbench.config import TTTSettings; "
            "from sealbench.families.arc.augment import transforms_for; t = mini_task('flip_lr', 3); "
            "ex = build_ttt_data(t.train, transforms_for(True, True, True, True), TTTSettings(cap=50), seed=5); "
            "print(hashlib.sha256(''.join(e.text for e in ex).encode()).hexdigest(), t.digest)")
    outs = set()
    for hs in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                                text=True, check=True).stdout.strip())
    assert len(outs) == 1
