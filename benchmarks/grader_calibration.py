"""How well a grader agrees with the LLM judges (issue 20): the numbers of docs/grading.md.

Two reference sets, both in the shared data folder (``$SEALBENCH_DATA_DIR``; nothing is copied
into the repository):

* ``reference/judge_calibration_embedded/``: 850 verdicts of a strong LLM judge (SEAL's
  instruction) on the embedded model's answers of the committed 200-passage run. Measured held out
  by passage (5 folds, :func:`~sealbench.grading.calibration.calibrate_by_passage`), per contender.
* ``reference/judge_calibration/``: SEAL's 3,896 GPT-4.1 verdicts on Qwen2.5-7B's answers.
  Measured held out by question (5 folds, :func:`~sealbench.grading.calibration.calibrate_held_out`)
  and in-sample, per file.

In both, the grader's tuned options are chosen from its grid on the other folds. Usage::

    PYTHONPATH=. SEALBENCH_DATA_DIR=../shared/data python3 benchmarks/grader_calibration.py \\
        --out benchmarks/results/grader_calibration_<date>.json

Prints the Markdown tables of docs/grading.md and writes one JSON object: date, command, commit,
grader, targets and, per set, the overall metrics, the per-contender / per-file metrics and the
options chosen per fold.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sealbench.grading import (  # noqa: E402
    calibrate,
    calibrate_by_passage,
    calibrate_held_out,
    load_calibration_rows,
    load_embedded_calibration_rows,
    markdown_table,
)

TARGETS = {
    "embedded_by_passage_agreement_min": 0.95,
    "embedded_bias_abs_max_per_contender": 0.02,
    "seal_held_out_agreement_min": 0.90,
    "seal_held_out_bias_abs_max": 0.02,
}


def _metrics(report: dict, by: str) -> dict:
    keep = ("n", "agreement", "grader_accuracy", "reference_accuracy", "bias", "confusion")
    out = {k: report[k] for k in keep}
    out[f"by_{by}"] = {name: {k: m[k] for k in keep} for name, m in report[f"by_{by}"].items()}
    if "chosen" in report:
        out["chosen_per_fold"] = report["chosen"]
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grader", default="match")
    ap.add_argument("--data-dir", default=None, help="default: $SEALBENCH_DATA_DIR")
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    emb = load_embedded_calibration_rows(args.data_dir)
    seal = load_calibration_rows(args.data_dir)
    emb_cv = calibrate_by_passage(emb, args.grader)
    emb_in = calibrate(emb, args.grader, reference_key="judge_correct")
    emb_in["by_contender"] = {}
    seal_ho = calibrate_held_out(seal, args.grader)
    seal_in = calibrate(seal, args.grader)

    print("embedded, 5-fold CV grouped by passage:\n" + markdown_table(emb_cv) + "\n")
    print("SEAL GPT-4.1, held out by question:\n"
          + markdown_table(seal_ho, by="source", reference="GPT-4.1") + "\n")
    print("SEAL GPT-4.1, in-sample:\n"
          + markdown_table(seal_in, by="source", reference="GPT-4.1") + "\n")
    print(f"embedded in-sample: {100 * emb_in['agreement']:.2f}%, {100 * emb_in['bias']:+.2f} pp")

    met = {
        "embedded_agreement": emb_cv["agreement"] >= TARGETS["embedded_by_passage_agreement_min"],
        "embedded_bias_every_contender": all(
            abs(m["bias"]) <= TARGETS["embedded_bias_abs_max_per_contender"] + 1e-12
            for m in emb_cv["by_contender"].values()),
        "seal_agreement": seal_ho["agreement"] >= TARGETS["seal_held_out_agreement_min"],
        "seal_bias": abs(seal_ho["bias"]) <= TARGETS["seal_held_out_bias_abs_max"],
    }
    print("targets met:", met)
    result = {
        "what": "agreement of a grader with LLM-judge verdicts (issue 20)",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "PYTHONPATH=. SEALBENCH_DATA_DIR=../shared/data python3 "
                   "benchmarks/grader_calibration.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "commit": _commit(),
        "grader": args.grader,
        "targets": TARGETS,
        "targets_met": met,
        "embedded_by_passage": _metrics(emb_cv, "contender"),
        "embedded_in_sample": {k: emb_in[k] for k in ("n", "agreement", "bias", "confusion")},
        "seal_held_out_by_question": _metrics(seal_ho, "source"),
        "seal_in_sample": _metrics(seal_in, "source"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
