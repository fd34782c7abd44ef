"""Invertible grid augmentations (the TTT/SEAL families), colour and demo-order permutations.

Every `Transform` has a forward map and an inverse with ``inverse(forward(g)) == g`` for every grid
(tested with hypothesis). The geometric transforms (the dihedral group: rotations, flips, transposes)
are bijections on grids; the others (reflections that append a mirrored copy, translations, resolution
and tiling) are injective and their inverse is a left inverse.

Families (SEAL's ``data_generation`` flags):
  basic   rot90, rot180, rot270, flip_lr, flip_ud, transpose, anti_transpose,
          reflect_{down,up,right,left} (append a mirrored copy), translate_{down,right,diag} (cyclic shift by 1)
  size    upscale_2x (2x resolution), double_height, double_width
  chain   every non-identity geometric transform followed by 2x resolution
  repeat  tile_v (2x vertically), tile_h (2x horizontally), tile_2x2 (both)

Everything here is ordered lists and seeded ``random.Random``; nothing depends on set or dict-hash
order, so results are the same under any PYTHONHASHSEED.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, TypeVar

from .grids import MAX_SIDE, Grid, fits

T = TypeVar("T")


# ------------------------------------------------------------------------------------ primitives
def identity(g: Grid) -> Grid:
    return g


def rot90(g: Grid) -> Grid:
    """Rotate 90 degrees clockwise."""
    return tuple(zip(*g[::-1]))


def rot180(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g[::-1])


def rot270(g: Grid) -> Grid:
    return tuple(zip(*g))[::-1]


def flip_lr(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g)


def flip_ud(g: Grid) -> Grid:
    return tuple(g[::-1])


def transpose(g: Grid) -> Grid:
    return tuple(zip(*g))


def anti_transpose(g: Grid) -> Grid:
    return rot180(transpose(g))


def upscale(g: Grid, ky: int, kx: int) -> Grid:
    return tuple(tuple(c for c in row for _ in range(kx)) for row in g for _ in range(ky))


def downscale(g: Grid, ky: int, kx: int) -> Grid:
    return tuple(tuple(row[::kx]) for row in g[::ky])


def tile(g: Grid, ny: int, nx: int) -> Grid:
    return tuple(tuple(row) * nx for row in g) * ny


def untile(g: Grid, ny: int, nx: int) -> Grid:
    h, w = len(g) // ny, len(g[0]) // nx
    return tuple(tuple(row[:w]) for row in g[:h])


def roll(g: Grid, dy: int, dx: int) -> Grid:
    h, w = len(g), len(g[0])
    return tuple(tuple(g[(r - dy) % h][(c - dx) % w] for c in range(w)) for r in range(h))


def reflect(g: Grid, axis: int, reverse: bool) -> Grid:
    """Append a mirrored copy: axis 0 below (reverse: above), axis 1 to the right (reverse: left)."""
    if axis == 0:
        return g[::-1] + g if reverse else g + g[::-1]
    return tuple((row[::-1] + row) if reverse else (row + row[::-1]) for row in g)


def unreflect(g: Grid, axis: int, reverse: bool) -> Grid:
    if axis == 0:
        h = len(g) // 2
        return tuple(g[h:]) if reverse else tuple(g[:h])
    w = len(g[0]) // 2
    return tuple(tuple(row[w:]) if reverse else tuple(row[:w]) for row in g)


# ------------------------------------------------------------------------------------ transforms
@dataclass(frozen=True)
class Transform:
    name: str
    family: str                      # identity | basic | size | chain | repeat
    forward: Callable[[Grid], Grid]
    inverse: Callable[[Grid], Grid]
    geometric: bool = False          # a bijection (dihedral group): usable to vote at prediction time

    def apply(self, g: Grid, max_side: int = MAX_SIDE) -> Grid | None:
        """The transformed grid, or None when it would exceed `max_side` (dropped)."""
        out = self.forward(g)
        return out if fits(out, max_side) else None

    def __call__(self, g: Grid) -> Grid:
        return self.forward(g)


def _t(name, family, fwd, inv, geometric=False) -> Transform:
    return Transform(name, family, fwd, inv, geometric)


IDENTITY = _t("identity", "identity", identity, identity, True)

GEOMETRIC: list[Transform] = [
    IDENTITY,
    _t("rot90", "basic", rot90, rot270, True),
    _t("rot180", "basic", rot180, rot180, True),
    _t("rot270", "basic", rot270, rot90, True),
    _t("flip_lr", "basic", flip_lr, flip_lr, True),
    _t("flip_ud", "basic", flip_ud, flip_ud, True),
    _t("transpose", "basic", transpose, transpose, True),
    _t("anti_transpose", "basic", anti_transpose, anti_transpose, True),
]


def _reflect(name, axis, rev):
    return _t(name, "basic", lambda g: reflect(g, axis, rev), lambda g: unreflect(g, axis, rev))


def _roll(name, dy, dx):
    return _t(name, "basic", lambda g: roll(g, dy, dx), lambda g: roll(g, -dy, -dx))


def _up(name, ky, kx, family="size"):
    return _t(name, family, lambda g: upscale(g, ky, kx), lambda g: downscale(g, ky, kx))


def _tile(name, ny, nx):
    return _t(name, "repeat", lambda g: tile(g, ny, nx), lambda g: untile(g, ny, nx))


def _chain(geo: Transform) -> Transform:
    return _t(f"{geo.name}+upscale_2x", "chain", lambda g: upscale(geo.forward(g), 2, 2),
              lambda g: geo.inverse(downscale(g, 2, 2)))


FAMILIES: dict[str, list[Transform]] = {
    "basic": GEOMETRIC[1:] + [
        _reflect("reflect_down", 0, False), _reflect("reflect_up", 0, True),
        _reflect("reflect_right", 1, False), _reflect("reflect_left", 1, True),
        _roll("translate_down", 1, 0), _roll("translate_right", 0, 1), _roll("translate_diag", 1, 1),
    ],
    "size": [_up("upscale_2x", 2, 2), _up("double_height", 2, 1), _up("double_width", 1, 2)],
    "chain": [_chain(g) for g in GEOMETRIC[1:]],
    "repeat": [_tile("tile_v", 2, 1), _tile("tile_h", 1, 2), _tile("tile_2x2", 2, 2)],
}
FAMILY_NAMES = ("basic", "size", "chain", "repeat")
ALL_TRANSFORMS: list[Transform] = [IDENTITY] + [t for f in FAMILY_NAMES for t in FAMILIES[f]]
BY_NAME: dict[str, Transform] = {t.name: t for t in ALL_TRANSFORMS}


def transforms_for(basic: bool = False, size: bool = False, chain: bool = False,
                   repeat: bool = False) -> list[Transform]:
    """The identity plus every transform of the enabled families, in a fixed order."""
    flags = {"basic": basic, "size": size, "chain": chain, "repeat": repeat}
    return [IDENTITY] + [t for f in FAMILY_NAMES if flags[f] for t in FAMILIES[f]]


# ------------------------------------------------------------------------------------ colours
def random_color_permutation(rng: random.Random) -> tuple[int, ...]:
    """A permutation of colours 1-9 with 0 (the background) fixed, as a 10-tuple old -> new."""
    rest = list(range(1, 10))
    rng.shuffle(rest)
    return (0, *rest)


def invert_permutation(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for old, new in enumerate(perm):
        inv[new] = old
    return tuple(inv)


def permute_colors(g: Grid, perm: tuple[int, ...]) -> Grid:
    return tuple(tuple(perm[c] for c in row) for row in g)


# ------------------------------------------------------------------------------------ tasks
Pair = tuple[Grid, Grid]


def transform_pairs(pairs: list[Pair], f: Callable[[Grid], Grid | None]) -> list[Pair] | None:
    """Apply `f` to both grids of every pair; None if any result is None (e.g. over 30x30)."""
    out = []
    for i, o in pairs:
        a, b = f(i), f(o)
        if a is None or b is None:
            return None
        out.append((a, b))
    return out


def dedup(items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """Drop later duplicates, keeping first occurrences in their original (deterministic) order."""
    seen: dict[Hashable, None] = {}
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen[k] = None
            out.append(item)
    return out
