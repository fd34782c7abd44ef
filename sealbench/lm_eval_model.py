"""An lm-eval model type, ``sealbench``: score a sealbench contender on lm-eval tasks.

    python -m sealbench.lm_eval_model run --model sealbench \\
        --model_args model=embedded,contender=passage,device=cpu \\
        --include_path tasks --tasks seal_squad_nocontext --metadata '{"n_passages": 5}'

lm-eval 0.4.13 finds model types only in its own registry (it has no entry-point or plugin lookup
for models, and `--include_path` loads task helpers only after the model is built), so the model
type exists once this module has been imported. ``python -m sealbench.lm_eval_model ARGS`` imports
it and then runs lm-eval's own command line with ARGS (same arguments as ``lm_eval``); from Python,
``import sealbench.lm_eval_model`` before ``lm_eval.simple_evaluate(model="sealbench", ...)``.

Contenders (``contender=``):
  * ``base``: the unadapted model answers.
  * ``passage``: per passage, a fresh LoRA adapter is trained on the passage alone
    (``knowledge.training_texts(passage, [])``), the passage's questions are answered with it, and
    the adapter is reset. Requests are grouped by the ``passage_id``/``title``/``context`` their doc
    carries (the ``seal_squad_*`` tasks provide them).
  * ``teacher-notes``: as ``passage`` plus cached notes (``notes_file=``, default the GPT-4.1 notes
    in the data dir), SEAL's "train on passage + implications".

Only ``generate_until`` is implemented; the SEAL tasks need nothing else. This is the only sealbench
module that imports lm_eval.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

log = logging.getLogger(__name__)

CONTENDERS = ("base", "passage", "teacher-notes")
DEFAULT_NOTES = "notes/gpt-4.1_notes_val200.json"


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _cut(text: str, until) -> str:
    """Truncate a completion at the first stop string (lm-eval's `until`)."""
    if isinstance(until, str):
        until = [until]
    for stop in until or []:
        if stop:
            pos = text.find(stop)
            if pos != -1:
                text = text[:pos]
    return text


class SealbenchLM(LM):
    """A sealbench model plus an adaptation contender, as an lm-eval model type.

    model_args: model (sealbench model spec: ``embedded``, a checkpoint dir, a .gguf, a hub id),
    contender (base | passage | teacher-notes), device (auto | cpu | cuda...), dtype (auto | float32
    | bfloat16 ...), batch_size (generation batch), seed (adapter init and data order), lr, epochs,
    lora_r, lora_alpha, train_batch_size (inner-loop training; SEAL defaults r=32, alpha=64, lr 1e-3,
    10 epochs, batch 1), notes_file and data_dir (teacher-notes only), threads (torch CPU threads;
    on a crowded CPU threads=1 can be many times faster than torch's default).
    """

    def __init__(self, model: str = "embedded", contender: str = "base", device: str | None = None,
                 dtype: str = "auto", batch_size=16, max_batch_size=None, seed=0,
                 lr=1e-3, epochs=10, lora_r=32, lora_alpha=64, train_batch_size=1,
                 notes_file: str | None = None, data_dir: str | None = None, threads=None,
                 **unused) -> None:
        super().__init__()
        from .inner_loop import InnerLoop, LoRAConfig, TrainConfig
        from .models import LoadedModel, load_model, pick_device

        if contender not in CONTENDERS:
            raise ValueError(f"unknown contender {contender!r} for --model sealbench; "
                             f"choose one of {', '.join(CONTENDERS)}")
        if unused:
            log.warning("sealbench model type: ignoring unknown model_args %s", sorted(unused))
        if threads not in (None, ""):
            import torch
            torch.set_num_threads(int(threads))
        # lm-eval's CLI passes --device (default cuda:0) even when the user never chose one: fall back
        # to what torch can see instead of failing on a CPU machine.
        device = str(device) if device else "auto"
        if device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                log.warning("device %s asked for but no CUDA device is visible; using cpu", device)
                device = "cpu"
        device = pick_device(device)
        self.contender = contender
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto" -> 16
        self.seed = int(seed)
        # From Python a LoadedModel may be passed directly (tests use a tiny random model).
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
        self.loop = InnerLoop(self.loaded, LoRAConfig(r=int(lora_r), alpha=int(lora_alpha)))
        self.train_config = TrainConfig(learning_rate=float(lr), epochs=int(epochs),
                                        batch_size=int(train_batch_size))
        self.notes: dict[str, list[str]] | None = None
        if contender == "teacher-notes":
            from .knowledge import data_dir as default_data_dir, load_notes_file

            path = Path(notes_file) if notes_file else None
            if path is None or not path.is_absolute():
                root = default_data_dir(data_dir)
                if root is None:
                    raise ValueError("contender=teacher-notes needs notes_file=<path> or a data dir "
                                     "(data_dir= or $SEALBENCH_DATA_DIR) holding " + DEFAULT_NOTES)
                path = root / (path or DEFAULT_NOTES)
            self.notes = load_notes_file(path)
        self.last_run: list[dict] = []  # per passage: id, n questions, training stats, seconds

    # ------------------------------------------------------------------ lm-eval interface
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        # --model_args win over lm-eval's generic --device/--batch_size (which always arrive, with
        # defaults cuda:0 and 1) instead of clashing with them.
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**(extra | dict(arg_dict)))

    @property
    def tokenizer_name(self) -> str:
        return self.loaded.name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.loaded.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        return self.loaded.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict:
        info = {f"sealbench_{k}": v for k, v in self.loaded.describe().items()}
        info["sealbench_contender"] = self.contender
        return info

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "the sealbench model type only implements generate_until (the SEAL tasks "
            "seal_squad_nocontext / seal_squad_incontext); for loglikelihood tasks use --model hf")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "the sealbench model type only implements generate_until; use --model hf for perplexity")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        # Group requests by passage (first-seen order); results go back to request order.
        groups: dict[object, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(self._passage_key(req.doc), []).append(i)
        if self.contender != "base" and None in groups:
            raise ValueError(
                f"contender={self.contender} adapts per passage, so each doc must carry "
                "'title' and 'context' (and ideally 'passage_id'); use the seal_squad_* tasks "
                "or contender=base")
        results: list[str | None] = [None] * len(requests)
        self.last_run = []
        for key, idx in tqdm(groups.items(), disable=disable_tqdm, desc=f"sealbench {self.contender}"):
            doc = requests[idx[0]].doc
            start = time.perf_counter()
            record: dict = {"passage_id": key, "n_requests": len(idx)}
            if self.contender == "base":
                with self.loop.base_model():
                    answers = self._generate([requests[i] for i in idx])
            else:
                texts = self._training_texts(doc)
                self.loop.reset(seed=self.seed)
                record["train"] = self.loop.train(texts, self.train_config, seed=self.seed).to_dict()
                answers = self._generate([requests[i] for i in idx])
                self.loop.reset(seed=self.seed)  # leave the model unadapted between passages
            for i, answer in zip(idx, answers):
                results[i] = answer
                self.cache_hook.add_partial("generate_until", requests[i].args, answer)
            record["seconds"] = time.perf_counter() - start
            self.last_run.append(record)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _passage_key(doc) -> object:
        if not isinstance(doc, dict) or "context" not in doc or "title" not in doc:
            return None
        return doc.get("passage_id") or (doc["title"], doc["context"])

    def _training_texts(self, doc: dict) -> list[str]:
        from .knowledge import Passage, training_texts

        passage = Passage(id=str(doc.get("passage_id", "")), title=doc["title"], context=doc["context"])
        edits: list[str] = []
        if self.notes is not None:
            edits = self.notes.get(doc["context"], [])
            if not edits:
                log.warning("no cached notes for passage %s (%s); training on the passage only",
                            passage.id, passage.title)
        return training_texts(passage, edits)

    def _generate(self, reqs) -> list[str]:
        """Generate for requests sharing a passage; requests with different gen_kwargs run apart."""
        out: list[str] = [""] * len(reqs)
        by_kwargs: dict[str, list[int]] = {}
        for j, req in enumerate(reqs):
            by_kwargs.setdefault(repr(sorted((req.args[1] or {}).items())), []).append(j)
        for members in by_kwargs.values():
            kwargs = dict(reqs[members[0]].args[1] or {})
            until = kwargs.get("until") or []
            max_new = int(kwargs.get("max_gen_toks", kwargs.get("max_new_tokens", 64)))
            temperature = float(kwargs.get("temperature", 0.0) or 0.0)
            do_sample = _bool(kwargs.get("do_sample", False)) and temperature > 0
            texts = self.loop.generate([reqs[j].args[0] for j in members], max_new_tokens=max_new,
                                       batch_size=self.batch_size, do_sample=do_sample,
                                       temperature=temperature if do_sample else 1.0,
                                       top_p=float(kwargs.get("top_p", 1.0)),
                                       seed=self.seed if do_sample else None)
            for j, text in zip(members, texts):
                out[j] = _cut(text, until).strip()
        return out


if __name__ != "__main__":  # under `python -m` the real module registers itself (see below)
    register_model("sealbench")(SealbenchLM)


def main(argv: list[str] | None = None) -> None:
    """`python -m sealbench.lm_eval_model ARGS` == `lm_eval ARGS` with the sealbench model type."""
    import sys

    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_logging()
    if argv is not None:  # lm-eval's parser reads sys.argv itself
        sys.argv = ["lm-eval", *argv]
    parser = HarnessCLI()
    parser.execute(parser.parse_args())


if __name__ == "__main__":
    from sealbench.lm_eval_model import main as _main  # registers the model type once, by its real name

    _main()
