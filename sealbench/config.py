"""Every setting sealbench has, declared once: type, default, bounds and help.

`RunConfig` is one run (`sealbench run`'s flags are generated from it, cli.py); `ContenderSpec` is a
contender file (`baselines/`); `RLConfig` is a SEAL RL run (`presets/seal_rl/`). Presets for
`run --all` (`presets/all/`) are lists of RunConfig overrides. All of them are validated here before
any work starts: an unknown key or a bad value is one line naming the setting, the value and the
fix (`ConfigError`; the CLI exits with status 2).

A run's defaults depend on its family and protocol (SEAL's knowledge inner loop is 10 epochs at
batch 1, its CPT runs 3 epochs at batch 4 x 2, ARC's LoRA is r=128 on five projections):
`resolve()` fills every unset (None) setting from `PROTOCOL_DEFAULTS`, nanoGPT-style plain
overrides, and the resolved config is what a run records and hashes.
"""
from __future__ import annotations

import re
import typing
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from .families import PACKAGES, TASK_FAMILY
from .grading.answers import ANSWER_STOPS

def _unescape(v):
    """`--answer-stops '\\n\\n'` as typed in a shell (and shown by --help) means two newlines:
    \\n, \\t, \\r and \\\\ in a stop are read as escapes."""
    if not isinstance(v, str):
        return v
    return re.sub(r"\\(n|t|r|\\)", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], v)


def _visible(v: str) -> str:
    if not v.strip(" \t"):
        raise ValueError(f"{v!r} is only spaces or tabs, so it would cut every answer at its first word; "
                         "use visible text or a newline (\\n)")
    return v


# An answer stop: non-empty (an empty one would end every answer before its first token), escapes
# read as in the help's defaults ('\\n\\n'), never only spaces or tabs.
Stop = Annotated[str, BeforeValidator(_unescape), Field(min_length=1, max_length=100), AfterValidator(_visible)]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FAMILY_PROTOCOLS = {"squad": ("single", "cpt", "continual"), "arc": ("single",)}
GEOMETRIC = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "anti_transpose")
# The generated ARC tier's rules (families/arc/data.py implements them).
MINI_RULES = ("color_map", "flip_lr", "flip_ud", "rot180", "transpose", "rot90", "tile_h",
              "upscale_2x", "gravity", "shift_right")
NOTE_PROMPTS = ("implications", "implications-long", "rewrite", "self-qa")
Task = Literal[tuple(TASK_FAMILY)]         # each family declares its tasks (families/*/__init__.py)
FamilyName = Literal[tuple(PACKAGES)]
Style = Literal["plain", "chat", "auto"]


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it, its value and the fix."""


class Settings(BaseModel):
    """Base of every settings model: unknown keys are errors, values are frozen and validated."""
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def updated(self, **changes):
        """A validated copy with `changes` applied (None values are ignored)."""
        return type(self).model_validate({**self.model_dump(), **{k: v for k, v in changes.items()
                                                                    if v is not None}})


def _among(values, known, what: str) -> tuple:
    """`values` as a tuple; ValueError naming the unknown ones and the known ones."""
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; use some of {list(known)}")
    return tuple(values)


class LoRASettings(Settings):
    """A LoRA adapter's shape (SEAL knowledge: r=32, alpha=64 on every projection; dropout 0)."""
    r: int = Field(32, ge=1, le=1024, description="LoRA rank")
    alpha: float = Field(64, allow_inf_nan=False, gt=0, le=1e4, description="LoRA alpha (scale = alpha / r)")
    targets: tuple[str, ...] = Field(LORA_TARGETS, min_length=1, description="projections with an adapter")


    @field_validator("targets")
    @classmethod
    def _known(cls, v):
        return _among(v, LORA_TARGETS, "LoRA target(s)")


class TrainSettings(Settings):
    """How one adapter is trained (SEAL knowledge: lr 1e-3, 10 epochs, batch 1, AdamW)."""
    learning_rate: float = Field(1e-3, allow_inf_nan=False, gt=0, le=1.0, description="AdamW learning rate")
    epochs: int = Field(10, ge=1, le=10_000, description="passes over the edit's sequences")
    batch_size: int = Field(1, ge=1, le=4096, description="sequences per step; 1 = SEAL's semantics")
    grad_accum_steps: int = Field(1, ge=1, le=1024, description="batches per optimizer step")
    max_length: int = Field(2048, ge=8, le=1 << 20, description="longer sequences are truncated (tokens)")
    weight_decay: float = Field(0.0, allow_inf_nan=False, ge=0, le=1.0, description="AdamW weight decay")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="decay over the edit's steps")
    warmup_steps: int = Field(0, ge=0, le=1 << 20, description="linear warm-up steps")
    max_grad_norm: float | None = Field(None, allow_inf_nan=False, gt=0, le=1e6, description="clip each edit's gradient norm")



class TTTSettings(Settings):
    """ARC test-time training and prediction knobs that are not in the self-edit (SEAL's values)."""
    cap: int = Field(250, ge=1, le=100_000, description="max TTT examples per edit")
    leave: tuple[int, ...] = Field((1, 2), min_length=1, description="leave-n-out pseudo-tasks")
    permute_colors: bool = Field(True, description="add a colour-permuted copy of each example")
    permute_order: bool = Field(True, description="shuffle the demos of the permuted copy")
    max_length: int = Field(2048, ge=64, le=1 << 20, description="longer TTT examples are dropped (tokens)")
    batch_size: int = Field(2, ge=1, le=512, description="TTT batch size")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="TTT schedule")
    step_budget: int = Field(375, ge=1, le=1_000_000, description="epochs x examples / batch above this: over budget")
    predict_transforms: tuple[str, ...] = Field(GEOMETRIC, min_length=1, description="voting transforms")
    leave_one_out_prompts: bool = Field(True, description="also vote over prompts with one demo left out")
    n_attempts: int = Field(2, ge=1, le=10, description="attempts per test input (pass@n)")
    max_new_tokens: int = Field(2048, ge=8, le=16384, description="cap on a predicted grid's tokens")

    @field_validator("leave")
    @classmethod
    def _positive(cls, v):
        if any(n < 1 for n in v):
            raise ValueError("leave-n values must be >= 1")
        return tuple(v)

    @field_validator("predict_transforms")
    @classmethod
    def _geometric(cls, v):
        return _among(v, GEOMETRIC, "transform(s)")


# The ARC CPU budget: few TTT examples, short answers, four voting transforms (a CPU run finishes).
ARC_CPU_BUDGET = {"ttt": {"cap": 12, "step_budget": 24, "max_length": 512, "max_new_tokens": 160,
                          "predict_transforms": ("identity", "flip_lr", "rot180", "transpose")},
                  "lora_r": 16, "lora_alpha": 32, "k": 2, "notes_max_tokens": 160}
SEAL_ARC_LORA = ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")
PROTOCOL_DEFAULTS = {
    ("squad", "single"): dict(contenders=("base", "passage"), n_passages=10, epochs=10, lr=1e-3, batch_size=1,
                              grad_accum_steps=1, lora_r=32, lora_alpha=64),
    ("squad", "cpt"): dict(contenders=("base", "passage"), epochs=3, lr=1e-3, batch_size=4, grad_accum_steps=2,
                           lora_r=32, lora_alpha=64),
    ("squad", "continual"): dict(contenders=("passage",), epochs=10, lr=1e-3, batch_size=1, grad_accum_steps=1,
                                 lora_r=32, lora_alpha=64),
    ("arc", "single"): dict(contenders=("icl", "ttt-self-edit", "oracle"), lora_r=128, lora_alpha=16,
                            batch_size=2, grad_accum_steps=1, epochs=2, lr=1e-4),
}


Executor = Literal["local", "ray"]
EXECUTOR_SETTINGS = {"executor", "ray_address", "gpus_per_worker", "workers"}


class JobSettings(Settings):
    """What a `sealbench run` and a SEAL RL run share: where their batches run (`--executor ray`,
    docs/scale-out.md; never part of a result's identity) and their task's family."""
    executor: Executor = Field("local", description="local: this process | ray: one Ray actor per GPU (or CPU slot)")
    ray_address: str | None = Field(None, min_length=1, max_length=500,
                                    pattern=r"^(auto|local|ray://\S+|[^\s:/]+:\d{1,5})$",
                                    description="ray: auto (the cluster this node is in) | HOST:PORT | ray://HOST:PORT "
                                                "(unset: $RAY_ADDRESS, else a Ray started on this machine)")
    gpus_per_worker: float | None = Field(None, allow_inf_nan=False, ge=0, le=64, description="ray: GPUs per worker, "
                                          "fractions share a GPU (auto: 1 if the cluster has GPUs, else 0)")
    workers: int | None = Field(None, ge=1, le=4096, description="ray: workers (auto: GPUs / gpus-per-worker, else 2 on CPUs)")

    @property
    def family(self) -> str:
        return TASK_FAMILY[self.task]


class RunConfig(JobSettings):
    """One `sealbench run`: a task, a protocol, contenders and every setting that decides numbers.

    Settings left at None take the family's and protocol's defaults (`resolve`)."""
    # --- what to run
    task: Task = Field("seal_squad_nocontext", description="the evaluation task")
    protocol: Literal["single", "cpt", "continual"] = Field(
        "single", description="single passage (n=1) | cpt (one adapter on N passages) | continual (merged edits)")
    contenders: tuple[str, ...] | None = Field(None, min_length=1, description="contender names or YAML paths",
                                               json_schema_extra={"flag": "--contender"})
    model: str = Field("embedded", min_length=1, description="embedded | gemma3-270m | checkpoint dir | .gguf | hub id")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="run seed: every unit's seed derives from it")
    grader: Literal["match", "em", "f1", "judge"] = Field("match", description="answer grader (squad)")
    # --- items
    n_passages: int | None = Field(None, ge=1, le=2067, description="first N passages in SEAL's evaluation order (SEAL's set: the first 200)")
    cpt_n: tuple[int, ...] = Field((1, 4, 16), min_length=1, description="cpt: passages per adapter")
    steps: int = Field(8, ge=1, le=256, description="continual: K sequential edits")
    sequences: int = Field(8, ge=1, le=100_000, description="continual: S random orders")
    # --- inner loop (None: the protocol's default)
    epochs: int | None = Field(None, ge=1, le=10_000, description="inner-loop epochs (SEAL 10; cpt 3)")
    lr: float | None = Field(None, allow_inf_nan=False, gt=0, le=1.0, description="inner-loop learning rate (SEAL 1e-3)")
    batch_size: int | None = Field(None, ge=1, le=4096, description="sequences per step (SEAL 1)")
    grad_accum_steps: int | None = Field(None, ge=1, le=1024, description="batches per optimizer step")
    lora_r: int | None = Field(None, ge=1, le=1024, description="LoRA rank (SEAL 32; ARC 128)")
    lora_alpha: float | None = Field(None, allow_inf_nan=False, gt=0, le=1e4, description="LoRA alpha (SEAL 64; ARC 16)")
    max_length: int = Field(2048, ge=8, le=1 << 20, description="training sequences are cut to this (tokens)")
    # --- self-edits
    k: int | None = Field(None, ge=1, le=256, description="self-edits per item of note-writing contenders")
    notes_max_tokens: int | None = Field(None, ge=1, le=16384, description="max new tokens of a sampled self-edit")
    max_statements: int = Field(256, ge=1, le=100_000, description="self-edits with more lines are invalid")
    notes_style: Style = Field("auto", description="self-edit prompt: chat template when the model has one")
    seal_preset: str | None = Field(None, description="RL preset of the seal contender's policy (tiny | cpu | gpu | paper | path)")
    # --- answering
    answer_style: Style = Field("plain", description="answer prompt: SEAL's plain text or inside the chat template")
    max_answer_tokens: int = Field(64, ge=1, le=4096, description="max new tokens of an answer")
    answer_stops: tuple[Stop, ...] = Field(ANSWER_STOPS, max_length=32, description="an answer ends at the first "
                                           "of these (grading/answers.py; the raw text is kept in the row); "
                                           "type \\n for a newline, as in --answer-stops '\\n\\n' Question:")
    # --- ARC
    arc_tasks: str | None = Field(None, description="ARC task set: seal-eval | seal-train | arc-eval | mini | path.json")
    n_tasks: int | None = Field(None, ge=1, le=100_000, description="ARC: first N tasks (mini: how many to generate)")
    mini_rules: tuple[str, ...] | None = Field(None, min_length=1, description="seal_arc_mini: rules to cycle through")
    mini_size: tuple[int, int] | None = Field(None, description="seal_arc_mini: [min, max] input side")
    edit_format: Literal["free", "guided"] = Field("free", description="ARC self-edits: free JSON (SEAL) | guided choices")
    arc_budget: Literal["none", "cpu"] = Field("none", description="cpu: TTT budgets that finish on a CPU")
    policy_model: str | None = Field(None, description="ARC seal: a ready RL-trained policy checkpoint")
    rl_tasks: str | None = Field(None, description="ARC seal: RL training tasks (default: seal-train / mini-train)")
    rl_n_tasks: int | None = Field(None, ge=1, le=100_000, description="ARC seal: first N RL training tasks")
    ttt: TTTSettings = Field(TTTSettings(), description="ARC test-time training")
    keep_completions: bool = Field(False, description="ARC: keep every raw prediction in the rows")
    # --- machine (not part of a result's identity, except device kind and dtype)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda[:N]")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="fp32 on CPU, bf16 on GPU")
    threads: str = Field("auto", pattern=r"^(auto|[1-9]\d{0,3})$", description="torch CPU threads (auto: by CPU count)")
    edits_per_batch: int | None = Field(None, ge=1, le=4096, description="K edits trained at once (auto: by memory)")
    gen_batch_size: int | None = Field(None, ge=1, le=65536, description="rows per generation batch (auto: 32 CPU, 1024 GPU)")
    data_dir: str | None = Field(None, description="folder with squad/, notes/, arc/ (else $SEALBENCH_DATA_DIR)")
    reports_dir: str = Field("reports", min_length=1, description="where run folders are written")
    allow_failures: bool = Field(False, description="exit 0 even when units failed")
    quarantine_corrupt: bool = Field(False, description="move corrupt rows aside (their units are recomputed)")

    @field_validator("cpt_n")
    @classmethod
    def _cpt(cls, v):
        if any(n < 1 for n in v):
            raise ValueError("every N must be >= 1")
        return tuple(sorted(set(v)))

    @field_validator("mini_size")
    @classmethod
    def _size(cls, v):
        if v is not None and not 2 <= v[0] <= v[1] <= 30:
            raise ValueError("need 2 <= min <= max <= 30 (a 1x1 grid has no informative flip or rotation)")
        return v

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_as_text(cls, v):
        """A preset's `threads: 2` (a YAML int) means "2"; a bool is not a count."""
        v = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        if isinstance(v, str) and not re.fullmatch(r"auto|[1-9]\d{0,3}", v):
            raise ValueError("use a whole number of CPU threads from 1 to 9999, or auto")
        return v

    @field_validator("mini_rules")
    @classmethod
    def _rules(cls, v):
        bad = [r for r in v or () if r not in MINI_RULES]
        if bad:
            raise ValueError(f"unknown rule(s) {bad}; use some of {list(MINI_RULES)}")
        return v

    @model_validator(mode="after")
    def _fits_family(self):
        if self.protocol not in FAMILY_PROTOCOLS[self.family]:
            raise ValueError(f"protocol {self.protocol!r} is not available for task {self.task} "
                             f"(use {', '.join(FAMILY_PROTOCOLS[self.family])})")
        if self.protocol == "continual" and self.n_passages is not None and self.n_passages < self.steps:
            raise ValueError(f"continual: the pool (n_passages={self.n_passages}) is smaller than steps={self.steps}")
        return self

    def resolve(self) -> "RunConfig":
        """A copy with every None setting filled from the family/protocol defaults (and the ARC
        CPU budget when asked for)."""
        fill = dict(PROTOCOL_DEFAULTS[(self.family, self.protocol)])
        if self.protocol == "cpt":
            fill["n_passages"] = max(self.cpt_n)
        if self.protocol == "continual":
            fill["n_passages"] = self.steps
        data = self.model_dump()
        if self.family == "arc" and self.arc_budget == "cpu":
            budget = dict(ARC_CPU_BUDGET)
            data["ttt"] = {**budget.pop("ttt"), **{k: v for k, v in data["ttt"].items()
                                                   if v != TTTSettings.model_fields[k].default}}
            fill.update(budget)
        for key, value in fill.items():
            if data.get(key) is None:
                data[key] = value
        if self.protocol == "cpt":
            data["n_passages"] = max(self.cpt_n)
        try:
            return RunConfig.model_validate(data)
        except ValidationError as err:
            if self.protocol == "cpt" and any(e["loc"][:1] == ("n_passages",) for e in err.errors()):
                limit = RunConfig.model_fields["n_passages"].metadata
                top = next((m.le for m in limit if getattr(m, "le", None) is not None), None)
                raise ConfigError(f"--cpt-n {max(self.cpt_n)}: cpt trains on that many passages, above the "
                                  f"{top} there can be; lower --cpt-n") from None
            raise ConfigError(one_line(err, "resolved settings")) from None

    def train_settings(self) -> TrainSettings:
        r = self if self.epochs is not None else self.resolve()
        return TrainSettings(learning_rate=r.lr, epochs=r.epochs, batch_size=r.batch_size,
                             grad_accum_steps=r.grad_accum_steps, max_length=r.max_length)

    def lora_settings(self) -> LoRASettings:
        r = self if self.lora_r is not None else self.resolve()
        targets = SEAL_ARC_LORA if self.family == "arc" else LORA_TARGETS
        return LoRASettings(r=r.lora_r, alpha=r.lora_alpha, targets=targets)

    def identity(self) -> dict:
        """The settings that decide numbers (hashed into the run id): machine settings dropped."""
        drop = {"threads", "edits_per_batch", "gen_batch_size", "data_dir", "reports_dir", "allow_failures",
                "quarantine_corrupt", *EXECUTOR_SETTINGS}
        data = self.resolve().model_dump(mode="json", exclude=drop)
        data["device"], data["dtype"] = device_kind(data["device"], data["dtype"])
        return data


EDIT_SOURCES = ("none", "self", "file", "endpoint", "policy", "fixed")


class Endpoint(Settings):
    base_url: str | None = Field(None, description="OpenAI-compatible server (else $SEALBENCH_TEACHER_BASE_URL)")
    model: str | None = Field(None, description="model name (else $SEALBENCH_TEACHER_MODEL, gpt-4.1)")
    max_tokens: int = Field(1024, ge=1, le=65536)
    timeout: float = Field(30, allow_inf_nan=False, gt=0, le=3600)
    max_retries: int = Field(1, ge=0, le=20)


class ContenderSpec(Settings):
    """A contender file (`baselines/*.yaml`, `baselines/arc/*.yaml`): one schema for both families."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the contender's name")
    family: FamilyName = Field(description="which task family it runs on")
    description: str = ""
    role: Literal["contender", "ceiling"] = Field("contender", description="ceiling: an open-book upper bound")
    adapt: bool = Field(True, description="train an adapter (False: answer with the model as it is)")
    edits: Literal["none", "self", "file", "endpoint", "policy", "fixed"] = Field(
        "none", description="where self-edits come from")
    k: int = Field(1, ge=1, le=256, description="self-edits per item, one adapter each")
    prompt: Literal["implications", "implications-long", "rewrite", "self-qa"] = "implications"
    temperature: float = Field(1.0, allow_inf_nan=False, ge=0, le=10)
    top_p: float = Field(0.95, allow_inf_nan=False, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1, le=65536)
    file: str | None = Field(None, description="edits: file — notes JSON, relative to the data dir")
    endpoint: Endpoint | None = None
    answer_with_context: bool = Field(False, description="squad: the passage is in the answer prompt")
    include_passage: bool = Field(True, description="squad: the raw passage is one more training sequence")
    config: dict | None = Field(None, description="arc, edits: fixed — the self-edit config (SEAL's JSON)")
    policy: str | None = Field(None, description="edits: policy — the RL preset (default: --seal-preset, else cpu)")


    @model_validator(mode="after")
    def _consistent(self):
        if self.edits == "file" and not self.file:
            raise ValueError("edits: file needs `file:` (a notes JSON path)")
        if self.edits == "fixed" and self.config is None:
            raise ValueError("edits: fixed needs `config:` (the self-edit)")
        if self.edits in ("file", "endpoint") and self.family != "squad":
            raise ValueError(f"edits: {self.edits} is for the squad family")
        if self.edits == "fixed" and self.family != "arc":
            raise ValueError("edits: fixed is for the arc family")
        if not self.adapt and self.edits != "none":
            raise ValueError("a contender that does not adapt has no self-edits (edits: none)")
        return self

    @property
    def edits_per_item(self) -> int:
        return self.k if self.edits in ("self", "file", "endpoint", "policy") else 1


class RLConfig(JobSettings):
    """A SEAL ReST-EM run (docs/rl.md; SEAL §3): k self-edits per training item from the current
    policy, rewarded by the inner loop (mean of `repeats` seeds), the best kept, the policy SFT'd on
    (prompt -> kept self-edit) and merged, for `rounds` rounds."""
    task: Task = Field("seal_squad_nocontext", description="the evaluation task whose family is trained")
    model: str = "embedded"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    grader: Literal["match", "em", "f1", "judge"] = "match"
    n_items: int = Field(100, ge=1, le=100_000, description="training items (squad: SEAL's 100-passage pool)")
    train_tasks: str | None = Field(None, description="arc: training task set (default seal-train / mini-train)")
    k: int = Field(5, ge=1, le=256, description="self-edits sampled per item per round")
    repeats: int = Field(3, ge=1, le=64, description="inner-loop seeds averaged into one reward")
    rounds: int = Field(2, ge=1, le=100)
    keep: Literal["top1", "beats-passage", "all-correct"] = Field("top1", description="which self-edits are kept")
    heldout_items: int = Field(0, ge=0, le=2067, description="squad: evaluation passages scored after every round")
    prompt: Literal["implications", "implications-long", "rewrite", "self-qa"] = "implications"
    temperature: float = Field(1.0, allow_inf_nan=False, ge=0, le=10)
    top_p: float = Field(0.95, allow_inf_nan=False, gt=0, le=1)
    max_new_tokens: int = Field(1024, ge=1, le=65536)
    notes_style: Style = "auto"
    answer_style: Style = "plain"
    max_answer_tokens: int = Field(64, ge=1, le=4096)
    answer_stops: tuple[Stop, ...] = Field(ANSWER_STOPS, max_length=32)
    max_statements: int = Field(256, ge=1, le=100_000, description="self-edits with more lines earn reward 0 "
                                "(the validity rule of every run, families/squad/episode.py)")
    inner: TrainSettings = TrainSettings()
    inner_lora: LoRASettings = LoRASettings()
    sft: TrainSettings = TrainSettings(learning_rate=3e-4, epochs=2)
    sft_lora: LoRASettings = LoRASettings(r=64, alpha=128)
    edit_format: Literal["free", "guided"] = "free"
    mini_rules: tuple[str, ...] | None = None
    mini_size: tuple[int, int] | None = None
    ttt: TTTSettings = TTTSettings()
    edits_per_batch: int | None = Field(None, ge=1, le=4096)

    @model_validator(mode="after")
    def _keep_rule(self):
        fits = {"squad": ("top1", "beats-passage"), "arc": ("all-correct", "top1")}[self.family]
        if self.keep not in fits:
            raise ValueError(f"keep rule {self.keep!r} is not for the {self.family} family; use {' or '.join(fits)}")
        return self

    def identity(self) -> dict:
        data = self.model_dump(mode="json", exclude={"edits_per_batch", *EXECUTOR_SETTINGS})
        data["device"], data["dtype"] = device_kind(data["device"], data["dtype"])
        return data


def device_kind(device: str, dtype: str) -> tuple[str, str]:
    """What decides numbers of a device setting: cpu or cuda (not which card), and the dtype that
    `auto` resolves to there (fp32 on a CPU, bf16 on a GPU that has it; engine/models.py)."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if dtype == "auto":
        dtype = "float32"
        if kind == "cuda":
            import torch

            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return kind, dtype


# ------------------------------------------------------------------------------------ validation
def one_line(err: ValidationError, where: str, model: type[BaseModel] | None = None, flags: bool = False) -> str:
    """A pydantic error as one line: '<where>: <setting> = <value>: <problem>'; with `model`, a
    number out of bounds also gets its allowed range, and with `flags` the flag that sets it."""
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or "value"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r:.60}"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; `sealbench run --help` lists them)"
        extra = []
        if flags and e["loc"] and isinstance(e["loc"][0], str):
            names = [x for x in e["loc"] if isinstance(x, str)]  # an item of a list: its list's flag
            own = _field(model, e["loc"][:1]) if len(names) == 1 else None
            flag = ((own.json_schema_extra or {}) if own is not None and isinstance(own.json_schema_extra, dict)
                    else {}).get("flag")
            extra.append("flag " + (flag or "--" + "-".join(names).replace("_", "-")))
            if len(names) < len(e["loc"]) and own is not None and own.description:
                extra.append(f"expects {own.description}")
        bounds = _bounds(model, e["loc"]) if model is not None and e["type"] in BOUND_ERRORS else ""
        if bounds:
            extra.append(f"allowed: {bounds}")
        parts.append(f"{loc}{shown}: {msg}" + (f" ({'; '.join(extra)})" if extra else ""))
    more = f" (+{len(err.errors()) - 3} more)" if len(err.errors()) > 3 else ""
    return f"{where}: " + "; ".join(parts) + more


BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long")


def _field(model, loc: tuple):
    """The pydantic field at `loc` (nested settings followed), or None."""
    field = None
    for name in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or name not in model.model_fields:
            return None
        field = model.model_fields[name]
        args = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        model = args[0] if len(args) == 1 else field.annotation
    return field


def _bounds(model: type[BaseModel], loc: tuple) -> str:
    """The allowed range of the setting at `loc` ('1 to 100000', '> 0 and <= 1'), or ''."""
    import annotated_types as at

    field = _field(model, loc)
    if field is None:
        return ""
    bounds = {}
    for m in field.metadata:
        for kind, attr in (("ge", "ge"), ("gt", "gt"), ("le", "le"), ("lt", "lt"), ("min", "min_length"),
                           ("max", "max_length")):
            if isinstance(m, getattr(at, {"ge": "Ge", "gt": "Gt", "le": "Le", "lt": "Lt", "min": "MinLen",
                                          "max": "MaxLen"}[kind])):
                bounds[kind] = getattr(m, attr)
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']} to {bounds['le']}"
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    out = [f"{words[k]} {v}" for k, v in bounds.items() if k in words]
    out += [f"at least {bounds['min']} value(s)"] if "min" in bounds else []
    out += [f"at most {bounds['max']} value(s)"] if "max" in bounds else []
    return " and ".join(out)


def validate(model: type[Settings], data, where: str, given: dict | None = None, given_where: str | None = None):
    """`model.model_validate(data)`, with any error as one ConfigError line (out-of-bounds numbers
    with their allowed range). `given`/`given_where`: the settings the user typed (flags) within
    `data`; an error only in them is blamed on `given_where` and names their flags, not `where`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        tops = {e["loc"][0] for e in err.errors() if e["loc"]}
        if given and given_where and tops and tops <= set(given):
            raise ConfigError(one_line(err, given_where, model, flags=True)) from None
        raise ConfigError(one_line(err, where, model, flags=where.startswith("sealbench "))) from None
