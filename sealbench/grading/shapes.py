"""Answer shapes that deny credit although the gold words are present, and gold variants.

Small instruction-tuned models (the embedded SmolLM2-135M) answer in shapes that SEAL's GPT-4.1
verdicts on Qwen2.5-7B's answers rarely show: lists of candidates, answers that declare they do
not know, several conflicting values, dates whose year differs from the gold's. A judge asked
whether the answer *conveys the gold as its answer* rejects them; word matching alone finds the
gold words and accepts them. Each function here recognises one shape from the answer's form
(never from particular strings of any data set) and returns a short description of the evidence,
or None. :mod:`.match` applies them to answers its other rules would accept.
"""
from __future__ import annotations

import re

from .words import MONTHS, STOPWORDS, is_number, number_matches, tokens

# A list item's marker at the start of a line: "1.", "2)", "A)", "(b)", "-", "*", "•".
_MARKER_RE = re.compile(r"^\s*(?:[-*\u2022]|\(?(?:\d{1,2}|[A-Za-z])[.)])\s+")

# An answer that says it does not know: it calls *the answer* unknown or wrong ("The answer is
# not currently known", "the answer to whether ... is unknown", "The answer is incorrect"), or
# says "I don't know". A statement that some fact is unknown ("the relationship between L and P
# is unknown") is left alone: it may be the answer.
_UNKNOWN_RE = re.compile(
    r"\banswer\b[^.\n]{0,100}?\b(?:is|are|remains?)\s+(?:still\s+|currently\s+|not\s+yet\s+)?"
    r"(?:unknown|unclear|uncertain|not\s+(?:currently\s+|yet\s+)?known|incorrect|wrong|"
    r"not\s+correct)\b"
    r"|\b(?:i|we)\s+(?:do\s+not|don't|cannot|can't|am\s+not\s+able\s+to)\s+"
    r"(?:know|tell|say|determine)\b",
    re.I,
)

# Gold answers often carry an optional part in parentheses ("probabilistic (or 'Monte
# Carlo')", "Fort X (near present-day Y"); SQuAD spans are sometimes cut inside them.
_PAREN_RE = re.compile(r"\s*\([^()]*(?:\)|$)")

_YEAR_RE = re.compile(r"^[12]\d{3}$")


def declares_unknown(region: str) -> str | None:
    """The phrase by which the answer declares that the answer is not known (or that it is
    itself wrong): "The answer is not currently known, but ...", "I don't know"."""
    m = _UNKNOWN_RE.search(region)
    return " ".join(m.group().split()) if m else None


def list_items(region: str) -> list[str]:
    """The answer's lines, list markers removed, when it is written as a list (two or more lines
    that start with a list marker, or three or more lines); otherwise []."""
    lines = [ln for ln in region.splitlines() if ln.strip()]
    marked = [ln for ln in lines if _MARKER_RE.match(ln)]
    if len(marked) >= 2 and len(marked) >= len(lines) - 1:
        return [_MARKER_RE.sub("", ln).strip() for ln in marked]
    if len(lines) >= 3:
        return [ln.strip() for ln in lines]
    return []


def candidate_list(region: str, gold: str, max_item_tokens: int = 5) -> int | None:
    """How many candidates the answer lists, when it is a list of short alternatives (each item
    at most ``max_item_tokens`` tokens) of which only some convey the gold: a list of candidates
    does not commit to an answer. A gold of several items ("A and B", "A, B") may be answered by a
    list, so it is exempt."""
    gold_toks = tokens(gold)
    if "and" in gold_toks or "," in gold or ";" in gold:
        return None
    items = list_items(region)
    if len(items) < 2 or any(len(tokens(it)) > max_item_tokens for it in items):
        return None
    content = [t for t in gold_toks if not is_number(t)] or gold_toks
    with_gold = [it for it in items if set(content) <= set(tokens(it))]
    distinct = {" ".join(tokens(it)) for it in items}
    if len(with_gold) < len(items) and len(distinct) >= 2:
        return len(items)
    return None


def _role(toks: list[str], i: int) -> tuple[str, tuple[str, ...]]:
    """The word before a number (a content word only) and the two words after it."""
    before = toks[i - 1] if i > 0 else ""
    if not before or is_number(before) or before in STOPWORDS:
        before = ""
    return before, tuple(toks[i + 1: i + 3])


def conflicting_number(gold_numbers: list[str], pred_toks: list[str]) -> tuple[str, str] | None:
    """``(gold number, other number)`` when the answer gives the gold number and also a different
    number in the same role: after the same content word or before the same two words ("age 39
    ... age 38", "Apollo 20, Apollo 21", "every five years ... every six years"), both years or
    both not. A range ("from 1939 to 1945", "5-10") is not a conflict (numbers at most two tokens
    apart are left alone), nor is 1 ("one", "first": usually a pronoun or an ordinal)."""
    for g in gold_numbers:
        for i, tok in enumerate(pred_toks):
            if not number_matches(g, tok):
                continue
            before, after = _role(pred_toks, i)
            year = bool(_YEAR_RE.match(tok))
            for j, p in enumerate(pred_toks):
                if (abs(i - j) <= 2 or not is_number(p) or p == "1" or number_matches(g, p)
                        or p == tok or bool(_YEAR_RE.match(p)) != year):
                    continue
                b, a = _role(pred_toks, j)
                if (before and b == before) or (len(after) == 2 and a == after):
                    return g, p
    return None


def conflicting_date(gold_toks: list[str], pred_toks: list[str]) -> tuple[str, str] | None:
    """``(gold year, other year)`` when the answer writes the gold's month (and day, if any) with
    another year ("9 May 1507" for "9 May 1508"), even if the gold year appears elsewhere."""
    years = {t for t in gold_toks if _YEAR_RE.match(t)}
    months = {t for t in gold_toks if t in MONTHS}
    days = {t for t in gold_toks if t.isdigit() and len(t) <= 2}
    if not years or not months:
        return None
    for i, p in enumerate(pred_toks):
        if p not in months:
            continue
        window = pred_toks[max(0, i - 2): i + 3]
        if days and not days & set(window):
            continue
        other = [t for t in window if _YEAR_RE.match(t) and t not in years]
        if other:
            return sorted(years)[0], other[0]
    return None


def without_parentheses(gold: str) -> str | None:
    """The gold without its parenthetical parts ("probabilistic (or 'Monte Carlo')" ->
    "probabilistic"; an unclosed "(" runs to the end), or None when it has none or nothing
    would be left."""
    if "(" not in gold:
        return None
    rest = _PAREN_RE.sub("", gold).strip()
    return rest if rest and rest != gold.strip() and tokens(rest) else None


# A person's name as a gold answer: two to four capitalised words ("Thomas Davis", "Major George
# Washington", "Ted Ginn Jr."); generational suffixes are not the surname.
_NAME_RE = re.compile(r"^(?:[A-Z][a-z]+\.?\s+){1,3}[A-Z][a-z]+(?:\s+(?:Jr|Sr)\.?)?$")
_SUFFIXES = frozenset(("Jr", "Sr"))
_WHO_RE = re.compile(r"\bwho(?:m|se)?\b", re.I)


def surname_only(gold: str, region: str, question: str) -> str | None:
    """The surname by which the answer names the gold person ("Davis" for "Thomas Davis"), when
    the question asks for a person (who, whom, whose), the gold is a person's name, the surname
    is not in the question, and the answer writes it capitalised without another capitalised word
    before it ("South Asian" does not name "East Asian", "James Davis" does not name "Thomas
    Davis"). Place names ("New York" is not conveyed by "York") are not asked with "who"."""
    gold = gold.strip()
    if not _NAME_RE.match(gold) or not _WHO_RE.search(question):
        return None
    words = [w.rstrip(".") for w in gold.split()]
    surname = next(w for w in reversed(words) if w not in _SUFFIXES)
    if re.search(r"\b%s\b" % re.escape(surname), question, re.I):
        return None
    for m in re.finditer(r"\b%s\b" % re.escape(surname), region):
        before = region[: m.start()].rstrip(" (\"'")
        prev = before.split()[-1] if before.split() else ""
        if not prev[:1].isupper() or prev in words:
            return surname
    return None
