"""The `sealbench` command line: commands only. `run`'s and `train-seal`'s flags are generated from
the config schema (config.py), so a flag, a preset key and a contender field mean one thing.

    sealbench run --task seal_squad_nocontext --contender base passage self-notes --n-passages 10
    sealbench run --all --preset smoke|default|gpu|paper
    sealbench train-seal --preset cpu
    sealbench compare reports/          sealbench leaderboard reports/ benchmarks/results/
    sealbench view reports/<run-id> [--open]
    sealbench grade reports/<run-id> --grader em        (adds em's verdicts to a finished run; trains nothing)
    sealbench grade --in rows.jsonl --out verdicts.jsonl [--grader match]
    sealbench list                      sealbench model-path [MODEL]      sealbench migrate DIR

Errors a user can fix (bad flags, data, config, names) print one line and exit with status 2; a
run whose units failed says how many and where, and exits with status 1 (`--allow-failures`: 0).
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from .config import EXECUTOR_SETTINGS, ConfigError, RLConfig, RunConfig, validate
from .inputs import read_text


class Parser(argparse.ArgumentParser):
    """argparse that answers an unknown flag with the closest known ones and the usage, and never
    takes a prefix for a flag (`--epoch` is an error, not --epochs)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        if "unrecognized arguments" in message:
            known = [o for a in self._actions for o in a.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], known, n=2)
                if close:
                    message += f" (did you mean {' or '.join(close)}?)"
        self.print_usage(sys.stderr)
        self.exit(2, f"sealbench: error: {message}\n")


# ------------------------------------------------------------------------------ schema -> flags
def add_settings_flags(p: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "",
                       skip: tuple[str, ...] = ()) -> None:
    """One flag per setting of `model` (nested settings get `--<field>-<setting>`), all default None
    so that only what the user typed overrides a preset or the schema's default. Where batches run
    (`--executor` and the Ray settings, inherited from JobSettings) is listed last."""
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] in EXECUTOR_SETTINGS)
    for name, f in fields:
        if name in skip:
            continue
        ann = f.annotation
        inner = _unwrap(ann)
        dest = prefix + name
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            add_settings_flags(p, inner, prefix=f"{dest}__")
            continue
        flag = (f.json_schema_extra or {}).get("flag") or "--" + dest.replace("__", "-").replace("_", "-")
        default = f.default if not isinstance(f.default, BaseModel) else None
        said = default is None and any(w in (f.description or "") for w in ("default", "else", "auto"))
        help_text = (f.description or "") if said else f"{f.description or ''} (default: {_show(default)})".strip()
        choices = typing.get_args(inner) if typing.get_origin(inner) is typing.Literal else None
        if inner is bool:
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(inner) is tuple:
            p.add_argument(flag, dest=dest, nargs="+", default=None, metavar="V", help=help_text)
        else:
            p.add_argument(flag, dest=dest, default=None, choices=choices, metavar=None if choices else "V",
                           help=help_text)


def _unwrap(ann):
    """X | None -> X."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return args[0] if len(args) == 1 else ann
    return ann


def _show(v) -> str:
    if v is None:
        return "by protocol"
    if isinstance(v, tuple):  # strings quoted (answer stops hold newlines and spaces)
        return " ".join(repr(x) if isinstance(x, str) else str(x) for x in v)
    return str(v)


def settings_from_args(args, model: type[BaseModel], prefix: str = "") -> dict:
    """The flags the user gave, as a (nested) settings dict."""
    out = {}
    for name, f in model.model_fields.items():
        inner = _unwrap(f.annotation)
        dest = prefix + name
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            nested = settings_from_args(args, inner, prefix=f"{dest}__")
            if nested:
                out[name] = nested
        elif getattr(args, dest, None) is not None:
            out[name] = getattr(args, dest)
    return out


# ------------------------------------------------------------------------------ commands
def cmd_run(args) -> int:
    from .engine.models import set_threads
    from .runner import run

    given = settings_from_args(args, RunConfig)
    if args.preset is not None and not args.all:
        raise ConfigError(f"--preset {args.preset}: presets are sets of jobs for `sealbench run --all`; add --all "
                          "to run them, or drop --preset to run the flags given")
    if args.all:
        jobs = all_jobs(args.preset or "default", given)
    else:
        jobs = [validate(RunConfig, given, "sealbench run")]
        _no_arc_flags_on_knowledge(jobs[0], given)
    set_threads(jobs[0].threads)
    say = _say(args)
    if args.dry_run:
        from .estimate import GPU_NOTE, GPU_SIZED_S, dry_run, on_gpu

        total = 0.0
        for i, job in enumerate(jobs, 1):
            if len(jobs) > 1:
                say(f"[job {i}/{len(jobs)}]")
            total += dry_run(job, say)["total_s"]
        if len(jobs) > 1:
            say(f"all jobs: estimated wall time ~{total / 60:.1f} min")
        if total > GPU_SIZED_S and not on_gpu(jobs[0].device):
            say(f"note: {GPU_NOTE}")
        return 0
    failed = 0
    for i, job in enumerate(jobs, 1):
        if len(jobs) > 1:
            say(f"[job {i}/{len(jobs)}] {job.task} · {job.protocol} · {' '.join(job.resolve().contenders)}")
        result = run(job, progress=not args.no_progress, say=say)
        print(result.markdown)
        if result.failures:
            failed += len(result.failures)
            say(f"{len(result.failures)} of {result.n_units} unit(s) failed (rows in {result.folder}/results.jsonl; "
                f"re-run the same command to retry them); first: {result.failures[0]}")
        say(f"written: {result.folder}")
    return 1 if failed and not any(j.allow_failures for j in jobs) else 0


def all_jobs(preset: str, given: dict) -> list[RunConfig]:
    """The jobs of `run --all --preset <preset>` with the flags typed (`given`) applied. ARC settings
    go to the preset's ARC jobs only (on a knowledge job they would change nothing but its run id);
    a preset without an ARC job refuses them in one line, as `run` does."""
    from . import registry

    path, jobs = registry.all_preset(preset)
    knowledge = {k: v for k, v in given.items() if k not in ARC_ONLY}
    out = []
    for i, j in enumerate(jobs):
        job = validate(RunConfig, {**j.model_dump(exclude_unset=True), **given}, f"{path} job {i}", given,
                       f"sealbench run --all (job {i} of {path})")
        if job.family == "squad" and knowledge != given:
            job = validate(RunConfig, {**j.model_dump(exclude_unset=True), **knowledge}, f"{path} job {i}", knowledge,
                           f"sealbench run --all (job {i} of {path})")
        out.append(job)
    if not any(j.family == "arc" for j in out):
        _no_arc_flags_on_knowledge(out[0], given, f"preset {path} has no ARC job")
    return out


ARC_ONLY = ("arc_tasks", "n_tasks", "mini_rules", "mini_size", "edit_format", "arc_budget", "rl_tasks", "rl_n_tasks",
            "ttt", "keep_completions", "train_tasks")


def _no_arc_flags_on_knowledge(job, given: dict, why: str = "") -> None:
    """An ARC setting typed for the knowledge task would change nothing but the run id: refuse it.
    `job`: a RunConfig or RLConfig (`run`, each job of `run --all`, `train-seal`); `given`: the flags typed."""
    if job.family != "squad":
        return
    flags = [f"--ttt-{k.replace('_', '-')}" for k in given.get("ttt", {})] + \
            [f"--{k.replace('_', '-')}" for k in ARC_ONLY if k != "ttt" and k in given]
    if flags:
        raise ConfigError(f"{' '.join(flags)}: ARC setting(s), unused by task {job.task}{f' ({why})' if why else ''}; "
                          "drop them, or pass --task seal_arc_fewshot or seal_arc_mini")


def cmd_train_seal(args) -> int:
    from . import registry
    from .engine.models import set_threads
    from .rl import ensure_policy

    validate(RunConfig, {"threads": args.threads}, "sealbench train-seal")  # --threads 0: one line
    given = settings_from_args(args, RLConfig)
    cfg = registry.rl_preset(args.preset, **given)
    _no_arc_flags_on_knowledge(cfg, given)
    set_threads(args.threads)
    try:
        policy = ensure_policy(cfg, args.reports_dir, args.data_dir, not args.no_progress, _say(args),
                               quarantine=args.quarantine_corrupt)
    except KeyboardInterrupt as err:
        if str(err):
            raise
        raise KeyboardInterrupt(f"while training the SEAL policy (an RL run folder under {args.reports_dir}): "
                                "every sample, reward and round already written is kept; re-run the same "
                                "command to resume it") from None
    print(policy.table())
    return 0


def cmd_grade(args) -> int:
    from .grading import GraderError, get_grader
    from .store import write_atomic

    from .registry import graders

    if args.grader not in graders():  # '' too: never the default in disguise
        raise ConfigError(f"--grader {args.grader!r}: unknown grader; choose one of: {', '.join(graders())}")
    if args.run_dir is not None:
        if args.inp or args.out:
            raise ConfigError("grade: give a run folder or --in/--out, not both")
        from .regrade import RegradeError, main_grade_run

        try:
            return main_grade_run(args.run_dir, args.grader)
        except RegradeError as err:
            raise ConfigError(str(err)) from None
    if not args.inp or not args.out:
        raise ConfigError("grade: pass a run folder (sealbench grade reports/<run-id> --grader em) "
                          "or both --in rows.jsonl and --out verdicts.jsonl")
    grader = get_grader(args.grader)
    path, out = Path(args.inp), Path(args.out)
    if out.resolve() == path.resolve() or (out.exists() and path.exists() and out.samefile(path)):
        raise ConfigError(f"--out {out} is the --in file; pass another --out (grade never overwrites its input)")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist; create it or pick another path")
    text = read_text(path, "--in")
    lines = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{n} is not valid JSON ({err.msg}); fix or remove that line") from None
        if not isinstance(row, dict) or any(k not in row for k in ("question", "gold", "prediction")):
            raise ConfigError(f"{path}:{n} needs question, gold and prediction")
        golds = row["gold"] if isinstance(row["gold"], list) else [row["gold"]]
        try:
            verdict = grader.grade(row["question"], golds, row["prediction"])
        except GraderError as err:
            raise ConfigError(f"{path}:{n}: {err}") from None
        lines.append(json.dumps({**row, "correct": verdict.correct, "reason": verdict.reason, "grader": grader.name}))
    write_atomic(out, "".join(line + "\n" for line in lines))
    n_correct = sum(json.loads(line)["correct"] for line in lines)
    print(f"graded {len(lines)} rows with {grader.name}: {n_correct} correct -> {out}", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from . import registry
    from .engine.checkpoints import MODELS

    print("tasks:")
    for name, text in registry.TASKS.items():
        print(f"  {name:24s} {text}")
    print("protocols (seal_squad_nocontext):")
    for name, text in registry.PROTOCOLS.items():
        print(f"  {name:24s} {text}")
    for fam in registry.PACKAGES:
        print(f"contenders ({fam}):")
        for name in registry.contender_names(fam):
            print(f"  {name:24s} {registry.load_contender(name, fam).description}")
    print("presets (run --all):  " + " ".join(registry.presets("all")))
    print("presets (train-seal): " + " ".join(registry.presets("seal_rl")))
    print("models:")
    for name, info in MODELS.items():
        print(f"  {name:24s} {info.display} ({info.license.split(',')[0]})")
    print("  (or a checkpoint dir, a .gguf file, a hub id in the local cache)")
    print("graders: " + " ".join(f"{g}{' (default)' if g == 'match' else ''}" for g in registry.graders()))
    return 0


def cmd_model_path(args) -> int:
    from .engine.checkpoints import model_path

    print(model_path(args.model))
    return 0


# Commands whose flags live in their own module's parser (sealbench/report/<name>.py).
DELEGATED = {"compare": "side-by-side tables and plots of every finished run under DIR",
             "leaderboard": "rank like-for-like results; write leaderboard.md and .html",
             "view": "browse one run: items, self-edits, answers, verdicts (an HTML page)",
             "migrate": "convert old run folders (summary.json) to the results table; store verdicts by "
                        "grader and grader-free unit keys"}


def _delegate(module: str):
    def run(args) -> int:
        import importlib

        return importlib.import_module(f".report.{module}", __package__).main(args.rest)
    return run


def _say(args):
    quiet = getattr(args, "quiet", False)
    return (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sealbench", description="Benchmark harness for self-adapting language models "
                                                  "(SEAL and baselines).")
    parser.add_argument("--verbose", action="store_true",
                        help="show third-party warnings and weight-loading bars (quiet by default)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("run", help="run contenders on a task and write reports/<run-id>/",
                       description="Run contenders on a task. The run folder is named after the config; "
                                   "finished units of any earlier run with the same content are reused. "
                                   "Unset settings take the protocol's defaults.")
    p.add_argument("--all", action="store_true", help="run every job of --preset (presets/all/*.yaml); other "
                   "flags override every job, ARC-only flags (--edit-format, --ttt-*, ...) its ARC jobs only")
    p.add_argument("--preset", default=None, help="with --all: smoke | default (the default) | paper | path.yaml")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (units to compute, reused, SEAL RL rounds) and estimated wall time per "
                        "phase, then exit; trains nothing and writes no run folder. The first dry run in a reports "
                        "dir on a device loads the model once to calibrate (says so first; ~20-60 s on a CPU, "
                        "recorded in <reports>/.calibration.json); later ones load no model")
    add_settings_flags(p, RunConfig)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("train-seal", help="run SEAL's RL loop (ReST-EM) and cache the policy",
                       description="Train the SEAL policy (resumable); `run --contender seal` reuses it.")
    p.add_argument("--preset", default="cpu", help="tiny | cpu | gpu | paper | path to an RL preset YAML")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--threads", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quarantine-corrupt", action="store_true",
                   help="move corrupt rows of the RL run folder aside (their samples are recomputed)")
    add_settings_flags(p, RLConfig)
    p.set_defaults(func=cmd_train_seal)
    for name, text in DELEGATED.items():
        p = sub.add_parser(name, help=text, add_help=False, description=text)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(name))
    p = sub.add_parser("grade", help="add a grader's verdicts to a finished run folder, or grade a JSONL file",
                       description="Grade stored answers; loads no model and trains nothing. With RUN_DIR: add "
                                   "the grader's verdicts to every answer of a finished knowledge run and its "
                                   "rows (grader = NAME) to the run's results table; a second call is a no-op. "
                                   "With --in/--out: grade a JSONL file (question, gold, prediction per row).")
    p.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR",
                   help="a finished run folder (reports/<run-id>)")
    p.add_argument("--in", dest="inp", default=None, help="input JSONL (question, gold, prediction per row)")
    p.add_argument("--out", default=None, help="output JSONL (rows + correct, reason, grader)")
    p.add_argument("--grader", default="match", metavar="NAME",
                   help="match | em | f1 | judge (default: match)")
    p.set_defaults(func=cmd_grade)
    p = sub.add_parser("list", help="tasks, protocols, contenders, presets, models and graders")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("model-path", help="print the converted checkpoint folder of a model (for lm_eval --model hf)")
    p.add_argument("model", nargs="?", default="embedded")
    p.set_defaults(func=cmd_model_path)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    from .edits import EditSourceError
    from .engine.models import ModelLoadError
    from .executors import ExecutorError
    from .families.arc.data import ArcDataError
    from .families.squad.data import DataError
    from .grading import GraderError
    from .runner import RunError
    from .store import StoreError

    return (ConfigError, DataError, ArcDataError, ModelLoadError, RunError, StoreError, GraderError, EditSourceError,
            ExecutorError)


def _quiet_third_party(verbose: bool) -> None:
    """Third-party warnings and progress bars only with --verbose (or SEALBENCH_VERBOSE=1)."""
    import os
    import warnings

    if verbose:
        os.environ["SEALBENCH_VERBOSE"] = "1"
        return
    if os.environ.get("SEALBENCH_VERBOSE", "").lower() in ("1", "true", "yes"):
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|torch|peft)\b")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in DELEGATED:
        # Flags before the first positional (`compare --help`, `view --out x DIR`) are not taken by
        # REMAINDER: hand them on, in order, to the command's own parser.
        args.rest = extra + list(args.rest)
    elif extra:
        # Report an unknown flag against the subcommand's own flags and usage.
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    _quiet_third_party(args.verbose)
    previous = _second_interrupt_exits()
    try:
        return args.func(args)
    except user_errors() as err:
        print(f"sealbench: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine, not the code: a full disk, read-only storage, a file for a folder
        from .engine.checkpoints import cache_dir
        from .store import _os_message

        where = Path(err.filename) if err.filename else Path("a file")
        line = _os_message(err, where)
        if str(where).startswith(str(cache_dir())):
            line += f" (the model cache: set SEALBENCH_CACHE_DIR to a writable folder, now {cache_dir()})"
        print(f"sealbench: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        what = str(err) or ("(every row already written is kept: rows are appended as each finishes); re-run "
                            "the same command to resume")
        print(f"sealbench: interrupted {what}", file=sys.stderr)
        return 130
    finally:
        import signal

        if previous is not None and signal.getsignal(signal.SIGINT) is _first_interrupt:
            signal.signal(signal.SIGINT, previous)  # no Ctrl-C came: leave the caller's handler as it was


def _first_interrupt(signum, frame):
    """Ctrl-C: stop the command (KeyboardInterrupt: rows written are kept, the message says what was
    lost); from now on another Ctrl-C exits at once with status 130."""
    import signal

    signal.signal(signal.SIGINT, _second_interrupt)
    raise KeyboardInterrupt


def _second_interrupt(signum, frame):
    import os

    print("sealbench: interrupted again: stopping now, without cleaning up (rows already written are kept; "
          "re-run the same command to resume)", file=sys.stderr, flush=True)
    os._exit(130)


def _second_interrupt_exits():
    """Install `_first_interrupt` for SIGINT (main thread, default handler only); the handler it
    replaced, or None."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    return signal.signal(signal.SIGINT, _first_interrupt)


if __name__ == "__main__":
    sys.exit(main())
