"""Where self-edits come from: the model itself, a cached teacher file, or a live teacher endpoint.

Each source returns, for one passage, a list of k completions (raw text, split into training
sequences later by `knowledge.training_texts`). Failures are raised as `NotesError` with a message
naming the passage and the fix; the runner records them per item.
"""
from __future__ import annotations

import os
from pathlib import Path

from .contenders import NotesSpec
from .inner_loop import InnerLoop, format_prompt
from .knowledge import DataError, Passage, data_dir, load_notes_file, self_edit_prompt


class NotesError(RuntimeError):
    pass


def sample_self_notes(loop: InnerLoop, passages: list[Passage], spec: NotesSpec, style: str,
                      seed: int, batch_size: int = 16) -> list[list[str]]:
    """k sampled self-edits per passage from the model with its adapter off (temperature/top-p)."""
    prompts = [format_prompt(loop.tokenizer, self_edit_prompt(p, spec.prompt), style)
               for p in passages for _ in range(spec.k)]
    with loop.base_model():
        flat = loop.generate(prompts, max_new_tokens=spec.max_new_tokens, batch_size=batch_size,
                             do_sample=True, temperature=spec.temperature, top_p=spec.top_p, seed=seed)
    return [flat[i * spec.k:(i + 1) * spec.k] for i in range(len(passages))]


class FileNotes:
    """Cached notes keyed by passage context (e.g. SEAL's GPT-4.1 notes for the 200 eval passages)."""

    def __init__(self, spec: NotesSpec, data: str | None = None):
        path = Path(spec.file).expanduser()
        if not path.is_absolute():
            root = data_dir(data)
            if root is None:
                raise NotesError(f"notes file {spec.file!r} is relative but no data dir is set; pass "
                                 "--data-dir/SEALBENCH_DATA_DIR or an absolute notes.file path")
            path = root / path
        self.path = path
        try:
            self.by_context = load_notes_file(path)
        except DataError as err:
            raise NotesError(str(err)) from None
        self.k = spec.k

    def notes_for(self, passage: Passage) -> list[str]:
        comps = self.by_context.get(passage.context)
        if comps is None:
            raise NotesError(f"no notes for passage {passage.id} ({passage.title!r}) in {self.path}; "
                             "this file only covers its own passages (SEAL's 200 evaluation passages)")
        if len(comps) < self.k:
            raise NotesError(f"{self.path} has {len(comps)} notes for passage {passage.id}, k={self.k} asked")
        return comps[: self.k]


class EndpointNotes:
    """Notes from a live OpenAI-compatible chat endpoint. The API key comes from the environment only."""

    def __init__(self, spec: NotesSpec):
        try:
            import openai
        except ImportError:
            raise NotesError("teacher endpoint notes need the openai package: pip install openai") from None
        ep = spec.endpoint or {}
        base_url = ep.get("base_url") or os.environ.get("SEALBENCH_TEACHER_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get("SEALBENCH_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
        self.model = ep.get("model") or os.environ.get("SEALBENCH_TEACHER_MODEL") or "gpt-4.1"
        self.max_tokens = int(ep.get("max_tokens", 1024))
        self.spec = spec
        self.base_url = base_url
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=float(ep.get("timeout", 30)),
                                    max_retries=int(ep.get("max_retries", 1)))

    def notes_for(self, passage: Passage) -> list[str]:
        import openai

        out = []
        for _ in range(self.spec.k):
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, temperature=self.spec.temperature, top_p=self.spec.top_p,
                    max_tokens=self.max_tokens,
                    messages=[{"role": "user", "content": self_edit_prompt(passage, self.spec.prompt)}])
            except openai.APIConnectionError:
                raise NotesError(f"teacher endpoint {self.base_url or 'api.openai.com'} is unreachable; "
                                 "check notes.endpoint.base_url / SEALBENCH_TEACHER_BASE_URL") from None
            except openai.APIStatusError as err:
                raise NotesError(f"teacher endpoint answered HTTP {err.status_code} for passage "
                                 f"{passage.id}: {str(err)[:200]}") from None
            out.append(resp.choices[0].message.content or "")
        return out
