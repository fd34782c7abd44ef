"""The `sealbench` command line.

    sealbench run --task seal_squad_nocontext --contender base passage self-notes --n-passages 10
    sealbench run --protocol cpt --contender passage teacher-notes --cpt-n 1 4 16
    sealbench run --all --preset smoke|default|paper
    sealbench train-seal --preset cpu
    sealbench compare reports/
    sealbench leaderboard reports/
    sealbench grade --in rows.jsonl --out verdicts.jsonl [--grader match]
    sealbench list

Errors a user can fix (bad data, bad config, unknown names) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

KNOWLEDGE_TASK = "seal_squad_nocontext"


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run contenders on a task and write reports/<run-id>/",
                       description="Run contenders on a task. The run folder is named after the config: "
                                   "the same command resumes (finished units are reused); a changed "
                                   "config gets a new folder. Unset options keep the protocol's defaults.")
    p.add_argument("--all", action="store_true",
                   help="run every task, contender and protocol of --preset (presets/all/*.yaml)")
    p.add_argument("--preset", default="default", help="with --all: smoke | default | paper | path.yaml")
    p.add_argument("--task", default=KNOWLEDGE_TASK,
                   help="seal_squad_nocontext (default) | seal_arc_fewshot | seal_arc_mini")
    p.add_argument("--protocol", default="single", choices=["single", "cpt", "continual"],
                   help="knowledge protocol: single passage (n=1), continued pretraining, continual edits")
    p.add_argument("--contender", nargs="+", default=None, metavar="NAME",
                   help="contenders by name (baselines/*.yaml) or path to a contender YAML "
                        "(default: base passage; continual: passage)")
    p.add_argument("--n-passages", type=int, default=None,
                   help="first N of SEAL's 200 evaluation passages (single: 10; continual: the pool)")
    p.add_argument("--cpt-n", type=int, nargs="+", default=None, metavar="N",
                   help="cpt: the numbers of passages per adapter (default 1 4 16)")
    p.add_argument("--steps", type=int, default=None, help="continual: K sequential edits (default 8)")
    p.add_argument("--sequences", type=int, default=None, help="continual: S random orders (default 8)")
    p.add_argument("--model", default=None,
                   help="'embedded' (SmolLM2-135M-Instruct, default), a checkpoint dir, a .gguf file or a hub id")
    p.add_argument("--device", default=None, help="auto (default) | cpu | cuda[:N]")
    p.add_argument("--dtype", default=None, help="auto (fp32 on CPU, bf16 on GPU) | float32 | bfloat16")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--data-dir", default=None,
                   help="folder with squad/, notes/, arc/; default $SEALBENCH_DATA_DIR, else the public datasets")
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--grader", default=None, help="match (default, deterministic) | em | f1 | judge")
    p.add_argument("--k", type=int, default=None, help="self-edits per passage for note-writing contenders")
    p.add_argument("--notes-max-tokens", type=int, default=None, help="max new tokens per sampled self-edit")
    p.add_argument("--max-statements", type=int, default=None,
                   help="self-edits with more lines are invalid (default 256)")
    p.add_argument("--seal-preset", default=None,
                   help="RL preset for the seal contender's policy: tiny | cpu | paper | path.yaml "
                        "(default: the one in baselines/seal.yaml)")
    p.add_argument("--epochs", type=int, default=None, help="inner-loop epochs (SEAL: 10; cpt: 3)")
    p.add_argument("--lr", type=float, default=None, help="inner-loop learning rate (SEAL: 1e-3)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="inner-loop batch size; 1 (default) = SEAL's semantics (no padding needed)")
    p.add_argument("--lora-r", type=int, default=None, help="default 32")
    p.add_argument("--lora-alpha", type=int, default=None, help="default 64")
    p.add_argument("--answer-style", default=None, choices=["plain", "chat", "auto"],
                   help="answer prompt as SEAL's plain text (default), or inside the chat template")
    p.add_argument("--notes-style", default=None, choices=["plain", "chat", "auto"],
                   help="self-edit prompt style (default auto: chat template when the model has one)")
    p.add_argument("--arc", nargs="+", default=None, metavar="KEY=VALUE",
                   help="ARC tasks: run settings, e.g. tasks=challenges.json:solutions.json n_tasks=4 "
                        "budget=cpu policy_model=DIR rl_tasks=seal-train ttt.cap=64 edit_format=guided "
                        "'mini_rules=[color_map]' 'mini_size=[3, 3]' (see docs/arc.md)")
    p.add_argument("--threads", default="auto",
                   help="torch CPU threads; auto = all cores when the machine is idle, fewer when busy")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)


def _arc_settings(pairs: list[str] | None, k: int | None) -> dict | None:
    """`--arc a=1 ttt.cap=64` -> {"a": 1, "ttt": {"cap": 64}} (values read as YAML scalars)."""
    import yaml

    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--arc expects KEY=VALUE, got {pair!r}")
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    if k is not None:
        out.setdefault("k", k)
    return out or None


def _job_from_args(args) -> dict:
    job = {"task": args.task, "protocol": args.protocol, "contenders": args.contender,
           "n_passages": args.n_passages, "cpt_n": args.cpt_n, "steps": args.steps,
           "sequences": args.sequences, "model": args.model, "device": args.device, "dtype": args.dtype,
           "seed": args.seed, "grader": args.grader, "k": args.k, "notes_max_tokens": args.notes_max_tokens,
           "max_statements": args.max_statements, "seal_preset": args.seal_preset, "epochs": args.epochs,
           "lr": args.lr, "batch_size": args.batch_size, "lora_r": args.lora_r, "lora_alpha": args.lora_alpha,
           "answer_style": args.answer_style, "notes_style": args.notes_style}
    if args.task in ("seal_arc_fewshot", "seal_arc_mini"):
        job["arc"] = _arc_settings(args.arc, job.pop("k"))
    elif args.arc:
        raise UserError("--arc applies to the ARC tasks (seal_arc_fewshot, seal_arc_mini) only")
    if job["n_passages"] is not None and job["n_passages"] < 1:
        raise UserError("--n-passages must be at least 1")
    return {k: v for k, v in job.items() if v is not None}


def cmd_run(args) -> int:
    from .jobs import JobError, load_all_preset, run_job
    from .models import set_threads
    from .protocols import failures

    threads = set_threads(args.threads)
    try:
        if args.all:
            # Flags given beside --all (model, device, seed...) apply to every job of the preset.
            given = {k: v for k, v in _job_from_args(args).items() if k not in ("task", "protocol")}
            jobs = [{**job, **given} for job in load_all_preset(args.preset)]
        else:
            jobs = [_job_from_args(args)]
    except JobError as err:
        raise UserError(str(err)) from None
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.all:
        say(f"preset {args.preset}: {len(jobs)} job(s); {threads} torch thread(s)")
    total_failed = 0
    for i, job in enumerate(jobs, 1):
        if len(jobs) > 1:
            task = job.get("task", KNOWLEDGE_TASK)
            protocol = f" · {job.get('protocol', 'single')}" if task == KNOWLEDGE_TASK else ""
            say(f"[job {i}/{len(jobs)}] {task}{protocol} · {' '.join(job.get('contenders', []))}")
        try:
            folder, summary, table = run_job(job, args.reports_dir, args.data_dir,
                                             progress=not args.no_progress, announce=say)
        except JobError as err:
            raise UserError(str(err)) from None
        print(table)
        failed, first = failures(summary)
        total_failed += failed
        if failed:
            say(f"{failed} unit(s) failed and were recorded (re-run the same command to retry them); "
                f"first error: {first}")
        say(f"written: {folder}/summary.json")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="side-by-side tables and plots of every run in a reports dir",
                       description="Write Markdown, CSV and HTML tables and PNG plots comparing every "
                                   "finished run under REPORTS_DIR (default: REPORTS_DIR/compare/).")
    p.add_argument("reports_dir", nargs="?", default="reports")
    p.add_argument("--out", default=None, help="output folder (default: REPORTS_DIR/compare)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=lambda a: _delegate("compare", a))


def _add_leaderboard(sub) -> None:
    p = sub.add_parser("leaderboard", help="rank contenders; write leaderboard.md and leaderboard.html",
                       description="Rank contenders per task/protocol/model over every finished run, with "
                                   "SEAL's published numbers as reference rows. Exit 2 if nothing to rank.")
    p.add_argument("reports_dir", nargs="?", default="reports")
    p.add_argument("--out", default=None, help="output folder (default: REPORTS_DIR)")
    p.add_argument("--data-dir", default=None, help="where reference/ lives (default $SEALBENCH_DATA_DIR)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=lambda a: _delegate("leaderboard", a))


def _delegate(name: str, args) -> int:
    """compare/leaderboard own their argument handling; pass the parsed flags through."""
    argv = [args.reports_dir] + (["--out", args.out] if args.out else []) + (["--no-plots"] if args.no_plots else [])
    if getattr(args, "data_dir", None):
        argv += ["--data-dir", args.data_dir]
    if name == "compare":
        from .compare import main as compare_main
        return compare_main(argv)
    from .leaderboard import main as leaderboard_main
    return leaderboard_main(argv)


def _add_train_seal(sub) -> None:
    p = sub.add_parser("train-seal", help="run only SEAL's RL loop (ReST-EM) and cache the policy",
                       description="Train the SEAL policy on the RL passage pool. Resumable: the same "
                                   "command continues at the unit it stopped in. `sealbench run "
                                   "--contender seal` reuses the finished policy of the same config.")
    p.add_argument("--preset", default="cpu", help="tiny | cpu | paper | path to an RL preset YAML")
    p.add_argument("--model", default="embedded")
    p.add_argument("--n-passages", type=int, default=None, help="passages of the RL pool")
    p.add_argument("--k", type=int, default=None, help="self-edits sampled per passage")
    p.add_argument("--repeats", type=int, default=None, help="inner-loop seeds per reward")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--keep", default=None, choices=["top1", "beats-passage"])
    p.add_argument("--heldout-passages", type=int, default=None,
                   help="SEAL evaluation passages scored after every round (round 0 = starting model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--threads", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_seal)


def cmd_train_seal(args) -> int:
    from .models import set_threads
    from .rl import SealTrainer, load_preset, rl_table

    set_threads(args.threads)
    try:
        config = load_preset(args.preset, model=args.model, n_passages=args.n_passages, k=args.k,
                             repeats=args.repeats, rounds=args.rounds, keep=args.keep, seed=args.seed,
                             heldout_passages=args.heldout_passages, device=args.device, dtype=args.dtype)
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from None
    trainer = SealTrainer(config, args.reports_dir, args.data_dir, progress=not args.no_progress)
    print(f"RL run folder: {trainer.folder.path}", file=sys.stderr)
    trainer.train()
    print(rl_table(trainer.summary()))
    print(f"written: {trainer.folder.path}/summary.json", file=sys.stderr)
    return 0


def _add_grade(sub) -> None:
    p = sub.add_parser("grade", help="grade answers in a JSONL file",
                       description="Each input row needs question, gold (string or list) and prediction; "
                                   "output rows add `correct` (bool) and `grader`.")
    p.add_argument("--in", dest="inp", required=True, help="input JSONL")
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--grader", default="match")
    p.set_defaults(func=cmd_grade)


def cmd_grade(args) -> int:
    from .grading import get_grader

    grader = get_grader(args.grader)
    path = Path(args.inp)
    if not path.exists():
        raise UserError(f"{path} not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{n} is not valid JSON ({err.msg}); fix or remove that line") from None
        missing = [k for k in ("question", "gold", "prediction") if k not in row]
        if missing:
            raise UserError(f"{path}:{n} lacks {', '.join(missing)}; every row needs question, gold, prediction")
        rows.append(row)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            golds = row["gold"] if isinstance(row["gold"], list) else [row["gold"]]
            row = {**row, "correct": bool(grader.grade(row["question"], golds, row["prediction"] or "")),
                   "grader": grader.name}
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, out)
    n_correct = sum(json.loads(l)["correct"] for l in out.read_text().splitlines())
    print(f"graded {len(rows)} rows with {grader.name}: {n_correct} correct -> {out}", file=sys.stderr)
    return 0


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="show tasks, contenders and graders")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    from .contenders import available, load_contender
    from .grading import GRADERS

    from .arc.run import arc_baselines_dir, load_arc_contender

    print("tasks:")
    print(f"  {KNOWLEDGE_TASK:24s} SQuAD questions asked without their passage (SEAL knowledge incorporation)")
    print(f"  {'seal_arc_fewshot':24s} ARC few-shot puzzles; self-edits are TTT configurations (SEAL's subsets)")
    print(f"  {'seal_arc_mini':24s} generated small-grid ARC-style puzzles with known answers (CPU tier)")
    print("contenders:")
    for name in available():
        c = load_contender(name)
        print(f"  {name:24s} [{c.task}] {c.description}")
    for path in sorted(arc_baselines_dir().glob("*.yaml")):
        c = load_arc_contender(path.stem)
        print(f"  {path.stem:24s} [seal_arc_*] {getattr(c, 'description', '')}")
    print("graders:")
    for name in GRADERS:
        print(f"  {name}{' (default)' if name == 'match' else ''}")
    return 0


class UserError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealbench",
        description="Benchmark harness for self-adapting language models (SEAL and baselines).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_train_seal(sub)
    _add_compare(sub)
    _add_leaderboard(sub)
    _add_grade(sub)
    _add_list(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .contenders import ContenderError
    from .knowledge import DataError
    from .models import ModelLoadError
    from .runner import RunError

    user_errors = (UserError, ContenderError, DataError, ModelLoadError, RunError)
    try:
        from .grading import GraderError
        user_errors += (GraderError,)
    except ImportError:
        pass
    try:
        return args.func(args)
    except user_errors as err:
        print(f"sealbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sealbench: interrupted; finished units are saved, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
