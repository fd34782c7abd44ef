"""SEAL's yes/no LLM judge through any OpenAI-compatible chat-completions endpoint.

Only the standard library is imported at module level; the ``openai`` SDK is imported when a judge
is built.
"""
from __future__ import annotations

import os
import re
import time

from .base import Grader, GraderError, Verdict
from .metrics import normalize_answer

# SEAL's yes/no grading instruction (knowledge-incorporation / general-knowledge utils), in our
# words: the student answer may add detail but must convey the gold answer and not contradict it.
JUDGE_PROMPT = (
    "You are a grading assistant. Decide whether the student's answer correctly answers the "
    "question, judging only against the gold answer given below and not against outside "
    "knowledge. The student's answer may include extra information, but it must fully convey "
    "the gold answer and must not contradict it. Ignore differences of style, wording or extra "
    "details that do not change correctness. Reply with only 'yes' or 'no'.\n\n"
    "Question: {question}\n"
    "Gold answer: {gold}\n"
    "Student answer: {prediction}\n\n"
    "Is the student's answer correct according to the gold answer? Reply 'yes' or 'no'."
)

_YES_RE = re.compile(r"\byes\b", re.I)
_NO_RE = re.compile(r"\bno\b", re.I)


def parse_yes_no(text: str | None) -> bool | None:
    """``True`` for a yes, ``False`` for a no, ``None`` when the reply is neither or both.

    Accepts "yes", "Yes.", "**No**", "Answer: yes", "yes - the student ..."; the first word
    decides when it is yes/no, otherwise the reply must contain exactly one of the two words."""
    if not text:
        return None
    cleaned = re.sub(r"[^a-z\s]", " ", text.lower()).split()
    if not cleaned:
        return None
    if cleaned[0] in ("yes", "no"):
        return cleaned[0] == "yes"
    if cleaned[0] in ("answer", "verdict", "grade", "final") and len(cleaned) > 1:
        rest = [w for w in cleaned[1:] if w not in ("answer", "is")]
        if rest and rest[0] in ("yes", "no"):
            return rest[0] == "yes"
    has_yes, has_no = bool(_YES_RE.search(text)), bool(_NO_RE.search(text))
    if has_yes != has_no:
        return has_yes
    return None


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v and v.strip():
            return v.strip()
    return None


class JudgeGrader(Grader):
    """SEAL's yes/no LLM judge through an OpenAI-compatible chat-completions endpoint.

    Settings (option first, then environment):

    * ``base_url``: ``SEALBENCH_JUDGE_BASE_URL``, then ``OPENAI_BASE_URL``; unset means the
      OpenAI API.
    * ``model``: ``SEALBENCH_JUDGE_MODEL``, default ``gpt-4.1``.
    * API key: environment only, ``SEALBENCH_JUDGE_API_KEY`` then ``OPENAI_API_KEY`` (local
      servers that ignore keys still need a non-empty value, e.g. ``EMPTY``).

    Requests use temperature 0, a ``timeout`` (20 s) and at most ``max_retries`` (2) retries on
    connection errors, timeouts, rate limits and server errors; then a :class:`GraderError` is
    raised. Replies that are neither yes nor no count as incorrect (as in SEAL) and are counted
    in ``stats["unparsed"]``. Verdicts are cached per (question, gold, prediction).
    """

    name = "judge"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float = 20.0,
        max_retries: int = 2,
        max_tokens: int | None = 5,
        prompt: str = JUDGE_PROMPT,
    ):
        self.base_url = base_url or _env("SEALBENCH_JUDGE_BASE_URL", "OPENAI_BASE_URL")
        self.model = model or _env("SEALBENCH_JUDGE_MODEL") or "gpt-4.1"
        self.timeout = float(timeout)
        self.max_retries = max(0, min(int(max_retries), 2))
        self.max_tokens = int(max_tokens) if max_tokens else None  # None: let the server decide
        self.prompt = prompt
        self.stats = {"requests": 0, "unparsed": 0, "cached": 0}
        self._cache: dict[tuple[str, str, str], Verdict] = {}
        api_key = _env("SEALBENCH_JUDGE_API_KEY", "OPENAI_API_KEY")
        if not api_key:
            raise GraderError(
                "judge grader: no API key; set SEALBENCH_JUDGE_API_KEY (or OPENAI_API_KEY) in the "
                "environment (any non-empty value for a local server that ignores keys)"
            )
        try:
            import openai  # lazy: only the judge needs the SDK
        except ImportError as exc:
            raise GraderError(
                "judge grader: the 'openai' package is not installed; pip install openai "
                "(or sealbench[full])"
            ) from exc
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    def _where(self) -> str:
        return self.base_url or "the OpenAI API (api.openai.com)"

    def ask(self, question: str, gold: str, prediction: str) -> bool | None:
        """One judge call; returns the parsed verdict (``None`` if the reply was neither)."""
        return parse_yes_no(self.reply(question, gold, prediction))

    def reply(self, question: str, gold: str, prediction: str) -> str:
        """One judge call; returns the judge's reply text ("" when it sent no content)."""
        content = self.prompt.format(question=question, gold=gold, prediction=(prediction or "").strip())
        oa = self._openai
        retryable = (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError)
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(0.25 * attempt)
            try:
                self.stats["requests"] += 1
                extra = {"max_tokens": self.max_tokens} if self.max_tokens else {}
                resp = self._client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": content}],
                    temperature=0,
                    **extra,
                )
            except retryable as exc:
                last = exc
                continue
            except oa.AuthenticationError as exc:
                raise GraderError(
                    f"judge grader: {self._where()} rejected the API key (HTTP 401); check "
                    "SEALBENCH_JUDGE_API_KEY / OPENAI_API_KEY"
                ) from exc
            except oa.NotFoundError as exc:
                raise GraderError(
                    f"judge grader: {self._where()} returned 404 for model {self.model!r}; check "
                    "SEALBENCH_JUDGE_MODEL and that the base URL ends in /v1"
                ) from exc
            except oa.APIStatusError as exc:
                raise GraderError(
                    f"judge grader: {self._where()} answered HTTP {exc.status_code} for model "
                    f"{self.model!r}: {str(exc).splitlines()[0][:200]}"
                ) from exc
            try:
                text = resp.choices[0].message.content
            except (AttributeError, IndexError, TypeError) as exc:
                raise GraderError(
                    f"judge grader: {self._where()} returned a reply that is not an OpenAI chat "
                    "completion; check SEALBENCH_JUDGE_BASE_URL"
                ) from exc
            return text or ""
        tries = self.max_retries + 1
        if isinstance(last, oa.APIStatusError):  # rate limit / server error on every try
            raise GraderError(
                f"judge grader: {self._where()} answered HTTP {last.status_code} on all {tries} "
                "tries; wait and retry, or point SEALBENCH_JUDGE_BASE_URL at a healthy server"
            ) from last
        kind = "timed out" if isinstance(last, oa.APITimeoutError) else "connection failed"
        raise GraderError(
            f"judge grader: cannot reach {self._where()} ({kind}, {tries} tries); check "
            "SEALBENCH_JUDGE_BASE_URL / OPENAI_BASE_URL and that the server is up"
        ) from last

    def grade_texts(self, question: str, golds: list[str], prediction: str) -> Verdict:
        # SEAL asks about one gold answer; with several (SQuAD dev), any accepted gold counts.
        # The verdict's reason is the judge's reply (for the last gold asked).
        seen = set()
        verdict = Verdict(False, "no gold answer")
        for gold in golds:
            norm = normalize_answer(gold)
            if norm in seen:
                continue
            seen.add(norm)
            key = (question, gold, prediction)
            if key in self._cache:
                self.stats["cached"] += 1
                verdict = self._cache[key]
            else:
                text = self.reply(question, gold, prediction)
                parsed = parse_yes_no(text)
                if parsed is None:
                    self.stats["unparsed"] += 1
                    text = f"neither yes nor no: {text.strip()!r}"
                verdict = Verdict(bool(parsed), " ".join(text.split()) or "empty reply")
                self._cache[key] = verdict
            if verdict:
                return verdict
        return verdict
