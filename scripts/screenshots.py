#!/usr/bin/env python3
"""Screenshots of the leaderboard page and a run view page, 1400 px wide, for docs/img/.

Installs nothing itself: it needs Debian's headless-capable Chromium on PATH (`chromium`; on
Debian/Ubuntu: `apt-get install -y chromium`; `--chromium PATH` names another binary) and
sealbench installed (`bash scripts/install.sh`). Each page is opened from a file:// URL by

    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
             --disable-background-networking --disable-component-update --disable-sync
             --user-data-dir=<tmp> --window-size=1400,<height> --hide-scrollbars --screenshot=<png> file://...

(the pages are self-contained, so nothing is fetched). A PNG over --max-kb is re-saved with a
256-colour palette (Pillow, which matplotlib already brings) to keep the repository small.

    python3 scripts/screenshots.py                                  # defaults below
    python3 scripts/screenshots.py --leaderboard benchmarks/results/leaderboard.html \\
        --run benchmarks/results/cpu_runs_2026-11-25/seal-squad-nocontext-embedded-14ea4cef27 --out docs/img

writes OUT/leaderboard.png and OUT/run-view.png (the view page is built into a temp dir with
`sealbench.report.view`, so the run folder is not written to). The defaults need the committed
folders migrated (`sealbench migrate benchmarks/results`) and the leaderboard built
(`sealbench leaderboard benchmarks/results --out benchmarks/results --data-dir benchmarks`).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def screenshot(chromium: str, page: Path, png: Path, width: int = 1400, height: int = 1000) -> Path:
    """One headless Chromium screenshot of `page` (a local HTML file) into `png`."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="sealbench-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png.resolve()}", page.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {page} (exit {done.returncode}): "
                           f"{(done.stderr.strip().splitlines() or [''])[-1]}")
    return png


def shrink(png: Path, max_kb: int) -> None:
    """Re-save a PNG over `max_kb` with a 256-colour palette (lossless for these flat pages in practice)."""
    if png.stat().st_size <= max_kb * 1024:
        return
    from PIL import Image

    with Image.open(png) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Screenshot the leaderboard and a run view page (headless Chromium).")
    p.add_argument("--leaderboard", default=str(REPO / "benchmarks" / "results" / "leaderboard.html"),
                   help="the leaderboard page (default benchmarks/results/leaderboard.html)")
    p.add_argument("--run", default=str(REPO / "benchmarks" / "results" / "cpu_runs_2026-11-25"
                                        / "seal-squad-nocontext-embedded-14ea4cef27"),
                   help="a finished run folder to build the view page of")
    p.add_argument("--view-html", default=None, help="an existing view page instead of --run")
    p.add_argument("--out", default=str(REPO / "docs" / "img"))
    p.add_argument("--height", type=int, default=1000, help="window height in px (width is 1400)")
    p.add_argument("--max-kb", type=int, default=400)
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = p.parse_args(argv)
    if not shutil.which(args.chromium) and not Path(args.chromium).exists():
        print("screenshots: error: no chromium on PATH: apt-get install -y chromium (or pass --chromium PATH)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="sealbench-view-") as tmp:
        view = Path(args.view_html) if args.view_html else None
        if view is None:
            sys.path.insert(0, str(REPO))
            from sealbench.report.view import ViewError, view as build_view

            try:
                view = Path(build_view(args.run, Path(tmp) / "view.html")["path"])
            except ViewError as err:  # e.g. the committed folders before `sealbench migrate benchmarks/results`
                print(f"screenshots: error: {err}", file=sys.stderr)
                return 2
        for page, name in ((Path(args.leaderboard), "leaderboard.png"), (view, "run-view.png")):
            if not page.exists():
                print(f"screenshots: error: {page} does not exist (build it first)", file=sys.stderr)
                return 2
            png = screenshot(args.chromium, page, out / name, 1400, args.height)
            shrink(png, args.max_kb)
            print(f"{png}: {png.stat().st_size / 1024:.0f} kB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
