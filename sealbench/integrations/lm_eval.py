"""An lm-eval model type, ``sealbench``: any knowledge contender scored on lm-eval's tasks through
the same episode as `sealbench run`.

    python -m sealbench.integrations.lm_eval --model sealbench \\
        --model_args model=embedded,contender=teacher-notes,device=cpu \\
        --include_path tasks --tasks seal_squad_nocontext --metadata '{"n_passages": 5}'

Requests are grouped by passage (the ``seal_squad_*`` docs carry passage_id/title/context); each
passage becomes the knowledge family's single-protocol unit for the contender — the same unit
identity, seed, self-edit, training sequences and inner loop as `sealbench run --contender NAME`
(families/squad/protocols.py, episode.py) — and the request gets that unit's answer, cut at its stop
sequences. Model args are any `sealbench run` settings (config.RunConfig: epochs, lr, lora_r,
notes_max_tokens, answer_style, seal_preset, ...) plus `contender`, `threads` (default `auto`, as
`sealbench run`: min(usable CPUs, 8)) and `batch_size`. Progress: a `self-edits` bar while notes
are sampled, then a `units` bar that moves as edits finish, with training steps and an ETA.
lm-eval scores one answer per question, so contenders with k self-edits answer with their first.

lm-eval 0.4 finds model types only in its registry, so the type exists once this module is
imported; ``python -m sealbench.integrations.lm_eval ARGS`` imports it and runs lm-eval's CLI.
This is the only sealbench module that imports lm_eval.
"""
from __future__ import annotations

import os

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ..config import RunConfig, validate
from ..engine.models import LoadedModel, load_model, pick_device
from ..families.squad.family import FAMILY
from ..families.squad.data import Passage, Question, load_passages


class SealbenchLM(LM):
    """A sealbench model plus a knowledge contender, as an lm-eval model type."""

    def __init__(self, model="embedded", contender: str = "base", device: str | None = None,
                 batch_size=None, max_batch_size=None, threads=None, **settings) -> None:
        super().__init__()
        from .. import registry

        from ..engine.models import set_threads

        set_threads(threads if threads not in (None, "") else "auto")  # as `sealbench run --threads auto`
        # lm-eval always passes --device (default cuda:0): fall back to what torch can see.
        device = str(device or "auto")
        if device.startswith("cuda"):
            import torch
            device = device if torch.cuda.is_available() else "cpu"
        given = {"contenders": [contender], "device": pick_device(device), **settings}
        if not isinstance(model, LoadedModel):
            given["model"] = str(model)
        self.config = validate(RunConfig, given, "--model_args").resolve().updated(protocol="single")
        self.spec = registry.load_contender(contender, "squad")
        if self.spec.k > 1:
            self.spec = self.spec.updated(k=1)  # one answer per question: the first self-edit
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, self.config.device,
                                                                              self.config.dtype)
        from ..edits import EditSources
        from ..engine.inner_loop import Engine
        from ..grading import get_grader

        self.fingerprints, engines = {"base": self.loaded.fingerprint}, {}
        self.engine = Engine(self.loaded, self.config.lora_settings(), self.config.edits_per_batch)
        engines["base"] = self.engine
        if self.spec.edits == "policy":
            from ..rl import ensure_policy, policy_config

            policy = ensure_policy(policy_config(self.config, self.spec), self.config.reports_dir,
                                   self.config.data_dir, progress=False)
            self.fingerprints["policy:" + self.spec.name] = policy.fingerprint
            self.engine = engines["policy:" + self.spec.name] = Engine(
                policy.load(self.config.device, self.config.dtype), self.config.lora_settings(),
                self.config.edits_per_batch)
        self.sources = EditSources(FAMILY, self.config, self.fingerprints, engines, self.config.data_dir)
        self.grader = get_grader(self.config.grader)
        self.last_rows: list[dict] = []   # the unit rows of the last generate_until call

    # ------------------------------------------------------------------ lm-eval interface
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**(extra | dict(arg_dict)))

    @property
    def tokenizer_name(self) -> str:
        return self.loaded.name

    def get_model_info(self) -> dict:
        return {**{f"sealbench_{k}": v for k, v in self.loaded.describe().items()},
                "sealbench_contender": self.spec.name}

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the sealbench model type implements generate_until only (the seal_squad_* "
                                  "tasks); for loglikelihood tasks use --model hf")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the sealbench model type implements generate_until only; use --model hf")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Every passage's unit through the engine as one queue (as `sealbench run`: slots reused
        as edits finish), with the run's progress bars unless `disable_tqdm`."""
        from tqdm.auto import tqdm

        from ..engine.inner_loop import Hooks
        from ..runner import _step_eta

        passages = self._passages(requests)
        units = FAMILY.plan(self.config, [self.spec], passages, self.sources, self.fingerprints)
        edits = self._edits(units, disable_tqdm)
        answers: dict[tuple[str, str], str] = {}
        self.last_rows = []
        bar = tqdm(total=len(units), desc="units", unit="edit", disable=disable_tqdm, dynamic_ncols=True)
        label = [""]
        Hooks.trained = _step_eta(bar, label)
        try:
            for batch, rows in FAMILY.stream(self.engine, units, edits, self.config, self.grader):
                for u, row in zip(batch, rows):
                    row["key"] = u.key
                    self.last_rows.append(row)
                    for q in row.get("questions", []):
                        answers[(q["passage_id"], q["question"])] = q["prediction"]
                label[0] = batch[-1].label[:40]
                bar.set_postfix_str(label[0])
                bar.update(len(batch))
        finally:
            Hooks.trained = None
            bar.close()
        out = []
        for req in requests:
            answer = answers.get((self._pid(req.doc), req.doc["question"]), "")
            self.cache_hook.add_partial("generate_until", req.args, answer)
            out.append(answer)
        return out

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _pid(doc) -> str:
        if not isinstance(doc, dict) or not {"title", "context", "question"} <= set(doc):
            raise ValueError("the sealbench model type adapts per passage: each doc must carry title, context "
                             "and question (use the seal_squad_* tasks)")
        return str(doc.get("passage_id") or doc["title"])

    def _passages(self, requests) -> list[Passage]:
        """The requests' passages, as `sealbench run` has them (from the data when the doc's
        passage_id names a dev passage, else from the docs), in first-seen order."""
        docs: dict[str, list[dict]] = {}
        for req in requests:
            docs.setdefault(self._pid(req.doc), []).append(req.doc)
        dev = None
        out = []
        for pid, group in docs.items():
            if pid.startswith("dev:"):
                dev = dev or load_passages("dev", self.config.data_dir)
                p = dev[int(pid.split(":")[1])]
                if p.context == group[0]["context"]:
                    out.append(p)
                    continue
            questions = [Question(d["question"], list(d.get("answers") or [""])) for d in group]
            out.append(Passage(pid, group[0]["title"], group[0]["context"], questions))
        return out

    def _edits(self, units, disable_tqdm: bool = False) -> dict:
        from tqdm.auto import tqdm

        from ..edits import Pending
        from ..engine.inner_loop import Hooks

        wanted, per_unit = {}, {}
        for u in units:
            for ref in u.edits:
                p = Pending(ref, u.contender, u.items[0])
                wanted.setdefault(self.sources.key(p), p)
                per_unit.setdefault(u.key, []).append((ref, self.sources.key(p)))
        rows = {}
        if wanted:
            bar = tqdm(total=len(wanted), desc="self-edits", unit="edit", disable=disable_tqdm, dynamic_ncols=True)
            Hooks.generated = bar.update
            try:
                rows = {r["key"]: r for r in self.sources.produce(list(wanted.values()))}
                bar.update(len(wanted) - bar.n)
            finally:
                Hooks.generated = None
                bar.close()
        return {uk: [(ref, rows[k]) for ref, k in pairs] for uk, pairs in per_unit.items()}


if __name__ != "__main__":  # under `python -m` the real module registers itself (see below)
    register_model("sealbench")(SealbenchLM)


def main(argv: list[str] | None = None) -> None:
    """`python -m sealbench.integrations.lm_eval ARGS` == `lm_eval ARGS` with the sealbench type."""
    import sys

    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_logging()
    if argv is not None:
        sys.argv = ["lm-eval", *argv]
    parser = HarnessCLI()
    parser.execute(parser.parse_args())


if __name__ == "__main__":
    from sealbench.integrations.lm_eval import main as _main  # registers the model type by its real name

    _main()
