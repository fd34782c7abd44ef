"""Where self-edits come from: none, self (sampled from the model), policy (sampled from the SEAL
RL-trained policy), file (cached notes of a stronger model), endpoint (a live OpenAI-compatible
teacher), fixed (a config written in the contender file).

Every self-edit is keyed by what determines it: the source (model fingerprint, notes file content,
endpoint and model name), the exact prompt, the sampling settings, the item and the edit's index,
and the run seed (a notes file's edit: only the file's content, the item and the index). Sampled edits draw with a per-row seed derived from that key
(engine/generate.py), so an edit is the same text whatever else is sampled beside it, and a run that
grows (more passages, another contender) reuses every edit it already has. A source that fails for
an item records the failure on that edit (the unit then fails with the reason); it never stops a run.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ContenderSpec
from .engine.inner_loop import Engine, format_prompt
from .families.base import EditRef, derive_seed, stable_hash


class EditSourceError(RuntimeError):
    """A self-edit source that cannot work at all (missing file, no openai package); one line."""


@dataclass
class Pending:
    ref: EditRef
    contender: ContenderSpec
    item: object
    key: str = ""


def edit_key(contender: ContenderSpec, item, index: int, source_id: str, prompt: str, config) -> str:
    """The content key of one self-edit (see the module docstring)."""
    if contender.edits == "file":
        # A cached note is fixed text: the file's content, the item and which note say all. Sampling
        # settings (a run's notes budget, temperature) and the seed must not split its units.
        return stable_hash({"source": source_id, "item": item.digest, "index": index})
    sampling = contender.model_dump(include={"temperature", "top_p", "prompt", "edits"})
    sampling["max_new_tokens"] = config.notes_max_tokens or contender.max_new_tokens
    sampling["format"] = config.edit_format  # ARC: free JSON or guided choices sample differently
    return stable_hash({"source": source_id, "prompt": prompt, "sampling": sampling, "item": item.digest,
                        "index": index, "seed": config.seed})


class EditSources:
    """Builds edit keys and produces the texts for one run.

    `engines` maps "base" (and "policy:<contender>" for policy contenders) to an Engine — or to a
    callable returning one, so a model is only loaded when an edit actually needs sampling.
    """

    def __init__(self, family, config, fingerprints: dict[str, str], engines: dict, data_dir=None):
        self.family, self.config, self.fingerprints, self.engines = family, config, fingerprints, engines
        self.data_dir = data_dir
        self._files: dict[str, tuple[str, dict]] = {}

    def check(self, contenders: list[ContenderSpec]) -> None:
        """Read every notes file now: a missing or malformed file stops the run before it starts
        (EditSourceError, one line); a passage missing from a good file fails only its units."""
        for c in contenders:
            if c.edits == "file":
                self._file(c)

    # ------------------------------------------------------------------ identity
    def source_id(self, c: ContenderSpec) -> str:
        if c.edits == "self":
            return f"model:{self.fingerprints['base']}"
        if c.edits == "policy":
            return f"policy:{self.fingerprints['policy:' + c.name]}"
        if c.edits == "file":
            return f"file:{self._file(c)[0]}"
        if c.edits == "endpoint":
            ep = c.endpoint.model_dump() if c.endpoint else {}
            return "endpoint:" + stable_hash({k: ep.get(k) for k in ("base_url", "model", "max_tokens")})
        return f"fixed:{stable_hash(c.config)}"

    def prompt(self, c: ContenderSpec, item) -> str:
        raw = self.family.edit_prompt(c, item)
        if c.edits not in ("self", "policy"):
            return raw  # a teacher sees the raw prompt; a file or fixed config has none of its own
        engine = self._engine(c)
        return format_prompt(engine.tokenizer, raw, self.config.notes_style)

    def key(self, p: Pending) -> str:
        """The edit's content key (the raw prompt and the prompt style stand for the formatted
        prompt, so keys are known before any model is loaded)."""
        if not p.key and p.contender.edits == "file":
            # a cached note is keyed by its own text (not the file's path or whole content): editing
            # one passage's notes changes the keys of that passage's units only
            p.key = edit_key(p.contender, p.item, p.ref.index, f"file-note:{self._note_digest(p)}", "", self.config)
        if not p.key:
            prompt = self.family.edit_prompt(p.contender, p.item)
            if p.contender.edits in ("self", "policy"):
                prompt = f"[{self.config.notes_style}]{prompt}"
            p.key = edit_key(p.contender, p.item, p.ref.index, self.source_id(p.contender), prompt, self.config)
        return p.key

    def _note_digest(self, p: Pending) -> str:
        """sha256 of the note a file contender gives `p` (of null when the file has none for it)."""
        comps = self._file(p.contender)[1].get(getattr(p.item, "context", None)) or []
        note = comps[p.ref.index] if p.ref.index < len(comps) else None
        return hashlib.sha256(json.dumps(note).encode()).hexdigest()[:16]

    def key_for(self, contender: ContenderSpec, item, index: int) -> str:
        """The content key of the `index`-th self-edit of `contender` for `item` (plans use it)."""
        return self.key(Pending(EditRef(contender.name, item.id, index), contender, item))

    def known_text(self, contender: ContenderSpec, item, index: int) -> str | None:
        """The self-edit's text when it can be known without a model (file, fixed); None for
        sampled ones; "" when the source has none for this item."""
        if contender.edits not in ("file", "fixed"):
            return None
        try:
            return self._fetch(Pending(EditRef(contender.name, item.id, index), contender, item))
        except EditSourceError:
            return ""

    # ------------------------------------------------------------------ producing
    def produce(self, pending: list[Pending]) -> list[dict]:
        """Rows {key, contender, item_id, index, text, error, generate_s, source} for `pending`."""
        rows = []
        by_source: dict[tuple[str, str], list[Pending]] = {}
        for p in pending:
            by_source.setdefault((p.contender.edits, p.contender.name), []).append(p)
        for (source, _), group in by_source.items():
            if source in ("self", "policy"):
                rows += self._sample(group)
            else:
                for p in group:
                    start = time.perf_counter()
                    try:
                        text, error = self._fetch(p), None
                    except EditSourceError as err:
                        text, error = None, str(err)
                    rows.append(self._row(p, text, error, time.perf_counter() - start))
        return rows

    def _row(self, p: Pending, text, error, seconds) -> dict:
        return {"key": self.key(p), "contender": p.contender.name, "item_id": p.ref.item_id,
                "index": p.ref.index, "text": text, "error": error, "generate_s": seconds,
                "source": self.source_id(p.contender)}

    def _engine(self, c: ContenderSpec) -> Engine:
        name = "policy:" + c.name if c.edits == "policy" else "base"
        engine = self.engines[name]
        if callable(engine) and not isinstance(engine, Engine):
            engine = self.engines[name] = engine()
        return engine

    def _sample(self, group: list[Pending]) -> list[dict]:
        c = group[0].contender
        engine = self._engine(c)
        prompts = [self.prompt(c, p.item) for p in group]
        seeds = [derive_seed("edit", self.key(p)) for p in group]
        start = time.perf_counter()
        texts = self.family.sample_edits(engine, c, prompts, seeds, self.config)
        per = (time.perf_counter() - start) / len(group)
        return [self._row(p, t, None, per) for p, t in zip(group, texts)]

    def _fetch(self, p: Pending) -> str:
        c = p.contender
        if c.edits == "fixed":
            return json.dumps(c.config)
        if c.edits == "file":
            digest, by_context = self._file(c)
            comps = by_context.get(p.item.context)
            if comps is None:
                raise EditSourceError(f"no notes for passage {p.item.id} ({p.item.title!r}) in {c.file}; "
                                      "the file covers only its own passages (SEAL's 200 evaluation passages)")
            if len(comps) <= p.ref.index:
                raise EditSourceError(f"{c.file} has {len(comps)} notes for passage {p.item.id}; "
                                      f"k={c.k} asked for more (lower k)")
            return comps[p.ref.index]
        return self._ask_endpoint(c, p)

    def _file(self, c: ContenderSpec) -> tuple[str, dict]:
        if c.file not in self._files:
            from .families.squad.data import DataError, data_dir, load_notes_file

            path = Path(c.file).expanduser()
            if not path.is_absolute():
                root = data_dir(self.data_dir)
                if root is None:
                    raise EditSourceError(f"contender {c.name}: notes file {c.file!r} is relative but no data "
                                          "dir is set; pass --data-dir or set SEALBENCH_DATA_DIR")
                path = root / path
            try:
                notes = load_notes_file(path)
            except DataError as err:
                raise EditSourceError(f"contender {c.name}: {err}") from None
            self._files[c.file] = (hashlib.sha256(path.read_bytes()).hexdigest()[:16], notes)
        return self._files[c.file]

    def _ask_endpoint(self, c: ContenderSpec, p: Pending) -> str:
        try:
            import openai
        except ImportError:
            raise EditSourceError("teacher endpoint notes need the openai package: pip install openai") from None
        ep = c.endpoint.model_dump() if c.endpoint else {}
        base_url = ep.get("base_url") or os.environ.get("SEALBENCH_TEACHER_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        client = openai.OpenAI(base_url=base_url, timeout=float(ep.get("timeout") or 30),
                               api_key=os.environ.get("SEALBENCH_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none",
                               max_retries=int(ep.get("max_retries") or 1))
        model = ep.get("model") or os.environ.get("SEALBENCH_TEACHER_MODEL") or "gpt-4.1"
        try:
            resp = client.chat.completions.create(
                model=model, temperature=c.temperature, top_p=c.top_p, max_tokens=int(ep.get("max_tokens") or 1024),
                messages=[{"role": "user", "content": self.family.edit_prompt(c, p.item)}])
        except openai.APIConnectionError:
            raise EditSourceError(f"teacher endpoint {base_url or 'api.openai.com'} is unreachable; check "
                                  "endpoint.base_url / SEALBENCH_TEACHER_BASE_URL") from None
        except openai.APIStatusError as err:
            raise EditSourceError(f"teacher endpoint answered HTTP {err.status_code} for item {p.ref.item_id}: "
                                  f"{str(err)[:160]}") from None
        return resp.choices[0].message.content or ""
