"""A SEAL policy as an artifact: a finished RL run folder, and how a run finds or loads it.

The policy after round r is the base model with the SFT adapters of rounds 1..r merged in turn.
Its fingerprint chains the base fingerprint with each round's adapter digest, so a run that uses
the policy records exactly which weights wrote its self-edits. A run never trains a policy: it
asks `ensure_policy` before it starts, which returns the finished RL run with the same config from
the reports dir, or trains it there first (resumable, rl/loop.py).

Each round's adapter is saved twice: `round_r/policy_adapter.safetensors` (the bank's flat A and B,
what the fingerprint hashes) and `round_r/peft/`, the policy after rounds 1..r as one adapter in
PEFT's format (`write_peft`), which `peft.PeftModel.from_pretrained(base, folder)` and lm-eval's
`--model hf --model_args pretrained=...,peft=...` load as it is.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import RLConfig, RunConfig
from ..families.base import stable_hash


@dataclass
class Policy:
    folder: Path
    config: RLConfig
    fingerprint: str
    rounds: list[dict]          # each round's policy.json

    @classmethod
    def from_folder(cls, folder: Path, config: RLConfig) -> "Policy":
        from ..store import read_json

        rounds = [read_json(folder / f"round_{r}" / "policy.json",
                            f"delete the folder {folder / f'round_{r}'} and {folder / 'COMPLETE'}, then re-run the "
                            "same command (that round is trained again)") for r in range(1, config.rounds + 1)]
        return cls(folder, config, rounds[-1]["fingerprint"], rounds)

    def load(self, device: str | None = None, dtype: str | None = None):
        """A fresh copy of the base model with every round's adapter merged (on `device`)."""
        from safetensors.torch import load_file

        from ..engine.lora import AdapterBank
        from ..engine.models import load_model

        loaded = load_model(self.config.model, device or self.config.device, dtype or self.config.dtype)
        for r in range(1, len(self.rounds) + 1):
            bank = AdapterBank(loaded.model, 1, self.config.sft_lora)
            bank.load_slot_state(0, load_file(str(self.folder / f"round_{r}" / "policy_adapter.safetensors")))
            bank.merge_into_base(0)
            bank.remove()
        loaded.fingerprint = self.fingerprint
        loaded.name = f"{loaded.name}+seal-r{len(self.rounds)}"
        return loaded

    @property
    def peft_folder(self) -> Path:
        """The policy as one PEFT LoRA adapter folder (the last round's `peft/`, rounds 1..R)."""
        return self.folder / f"round_{len(self.rounds)}" / PEFT_DIR

    def describe(self) -> dict:
        return {"rl_run": self.folder.name, "fingerprint": self.fingerprint, "rounds": len(self.rounds),
                "rl_config": self.config.identity()}

    def table(self) -> str:
        path = self.folder / "summary.md"
        return path.read_text() if path.exists() else ""


class ReadyPolicy:
    """A policy given as a checkpoint (`--policy-model`): used as it is, never trained."""

    def __init__(self, spec: str, device: str, dtype: str):
        from ..engine.models import fingerprint_of, resolve

        self.spec, self.device, self.dtype = spec, device, dtype
        self.fingerprint = fingerprint_of(resolve(spec)[1])

    def load(self, device: str | None = None, dtype: str | None = None):
        from ..engine.models import load_model

        return load_model(self.spec, device or self.device, dtype or self.dtype)

    def describe(self) -> dict:
        return {"checkpoint": self.spec, "fingerprint": self.fingerprint}


PEFT_DIR = "peft"


def write_peft(model, adapter_files: list[Path], lora, base_model: str, out: Path) -> Path:
    """Write the merge of these rounds' flat adapters (`policy_adapter.safetensors`, in round order)
    as one PEFT LoRA adapter folder `out` (adapter_config.json + adapter_model.safetensors).

    Merging adds each round's `alpha / r * (A B)^T` to the weights, so rounds 1..n are exactly one
    LoRA of rank n*r: A and B concatenated along the rank, alpha n*alpha (the same alpha / rank).
    `model` gives the target projections' names and shapes (any copy of the base architecture, no
    adapter installed); `base_model` is recorded as `base_model_name_or_path` (the checkpoint folder
    or hub id the policy's base was loaded from). Written to a temporary folder, then renamed.
    Raises ValueError when the adapters do not fit the model's projections."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    layers = [(name, m.in_features, m.out_features) for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.targets]
    r = lora.r
    a_parts: dict[str, list] = {name: [] for name, _, _ in layers}
    b_parts: dict[str, list] = {name: [] for name, _, _ in layers}
    for path in adapter_files:
        state = load_file(str(path))
        flat_a, flat_b = state["A"].float(), state["B"].float()
        if flat_a.numel() != sum(d_in * r for _, d_in, _ in layers) or \
                flat_b.numel() != sum(r * d_out for _, _, d_out in layers):
            raise ValueError(f"{path} does not fit the model's LoRA projections (r={r}, {len(layers)} layers)")
        oa = ob = 0
        for name, d_in, d_out in layers:  # the bank's layout: per layer (d_in, r) and (r, d_out)
            a_parts[name].append(flat_a[oa:oa + d_in * r].view(d_in, r).T)
            b_parts[name].append(flat_b[ob:ob + r * d_out].view(r, d_out).T)
            oa, ob = oa + d_in * r, ob + r * d_out
    n = len(adapter_files)
    tensors = {}
    for name, _, _ in layers:
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.cat(a_parts[name], 0).contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.cat(b_parts[name], 1).contiguous()
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
              "revision": None, "r": n * r, "lora_alpha": n * lora.alpha, "lora_dropout": 0.0,
              "target_modules": sorted({name.rsplit(".", 1)[-1] for name, _, _ in layers}),
              "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
              "modules_to_save": None, "init_lora_weights": True, "inference_mode": True}
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def chain_fingerprint(parent: str, adapter_file: Path) -> str:
    digest = hashlib.sha256(adapter_file.read_bytes()).hexdigest()
    return hashlib.sha256((parent + digest).encode()).hexdigest()[:16]


def rl_data_digest(items: list) -> str:
    """The content of an RL run's items (training pool, then held-out), not their paths or ids only:
    the same file with changed passages or answers is another RL run."""
    return stable_hash([f"{i.id}@{i.digest}" for i in items], 16)


def rl_items(config: RLConfig, data_dir=None) -> tuple[list, list]:
    """The RL run's training items and held-out items (the family's RL hooks)."""
    from .. import registry

    hooks = registry.family(config.task).rl
    return hooks.train_items(config, data_dir), hooks.heldout_items(config, data_dir)


def rl_run_id(config: RLConfig, base_fingerprint: str, data_digest: str | None = None, data_dir=None) -> str:
    """`seal-rl-<family>-<model>-<hash of the RL config, the base weights and the items' content>`."""
    model = Path(str(config.model)).name.replace(".gguf", "")
    family = "arc" if config.family == "arc" else "squad"
    if data_digest is None:
        train, heldout = rl_items(config, data_dir)
        data_digest = rl_data_digest(train + heldout)
    ident = {"config": config.identity(), "model": base_fingerprint, "data": data_digest}
    return f"seal-rl-{family}-{model}-{stable_hash(ident, 10)}".lower()


def policy_config(run: RunConfig, contender) -> RLConfig:
    """The RL config a run's policy contender uses: the RL preset (`contender.policy`, else the run's
    --seal-preset, else `cpu`) with the run's model, seed, device, dtype, grader and prompt styles,
    and for ARC the run's TTT settings and the contender's sampling settings."""
    from ..registry import rl_preset

    preset = contender.policy or run.seal_preset or "cpu"
    shared = dict(task=run.task, model=run.model, seed=run.seed, device=run.device, dtype=run.dtype,
                  grader=run.grader, notes_style=run.notes_style, answer_style=run.answer_style,
                  max_answer_tokens=run.max_answer_tokens, edits_per_batch=run.edits_per_batch,
                  executor=run.executor, ray_address=run.ray_address, gpus_per_worker=run.gpus_per_worker,
                  workers=run.workers)
    if run.family == "arc":
        r = run.resolve()
        shared.update(edit_format=run.edit_format, mini_rules=run.mini_rules, mini_size=run.mini_size,
                      ttt=r.ttt.model_dump(), inner_lora=run.lora_settings().model_dump(), keep="all-correct",
                      temperature=contender.temperature, top_p=contender.top_p,
                      max_new_tokens=r.notes_max_tokens or contender.max_new_tokens, k=r.k or contender.k,
                      train_tasks=run.rl_tasks, n_items=run.rl_n_tasks, rounds=1, repeats=1)  # SEAL's ARC RL: one round
    return rl_preset(preset, f"the run's settings for its SEAL policy (RL preset {preset})", **shared)
