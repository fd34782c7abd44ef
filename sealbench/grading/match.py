"""The deterministic ``match`` grader: rules tuned to agree with SEAL's GPT-4.1 judge.

The rules come from reading where plain containment / EM / F1 disagree with GPT-4.1 on SEAL's
released answers (reference/judge_calibration). Each rule is general (no per-question special
cases); the comment on each says which disagreement it addresses. ``docs/grading.md`` has the
measured agreement and the history of rule changes. Words are canonicalised by :mod:`.words`.
"""
from __future__ import annotations

from .answers import answer_region
from .base import Grader, Verdict
from .metrics import normalize_answer
from .shapes import (
    candidate_list,
    conflicting_date,
    conflicting_number,
    declares_unknown,
    surname_only,
    without_parentheses,
)
from .words import (
    AFFIRMING,
    DENIAL_RE,
    MONTHS,
    NEGATION_WINDOW,
    NEGATIONS,
    QUALIFIERS,
    STOPWORDS,
    Tokens,
    acronyms,
    is_number,
    kinds,
    number_matches,
    shown,
    similar,
    spelled,
    tokenize,
    tokens,
)


def _find_keys(keys: list[str], gold: str, prediction: str, pred_toks: list[str],
               question_toks: frozenset[str] | set[str] = frozenset()) -> dict:
    """Where each key word is found in the prediction (token index, or None): by soft word match
    (:func:`~.words.similar`), or by acronym in either direction ("CEO" ~ "Chief Executive
    Officer", "UNEP" ~ "United Nations Environment Programme"). A soft match on a word the
    question contains does not count ("Newcastle" for the gold "NewcastleGateshead" when the
    question asks about Newcastle): words copied from the question are no evidence."""
    def counts(k: str, p: str) -> bool:
        return similar(k, p) and (p == k or p not in question_toks or "qword" not in SHAPE_RULES)

    found = {k: next((i for i, p in enumerate(pred_toks) if counts(k, p)), None) for k in keys}
    content = [(i, p) for i, p in enumerate(pred_toks) if p not in STOPWORDS and not is_number(p)]
    for k in acronyms(gold) & {k for k in keys if found[k] is None}:
        at = spelled(k, [p for _, p in content])
        if at is not None:
            found[k] = content[at][0]
    gold_words = [k for k in keys if not is_number(k)]
    for a in acronyms(prediction):
        at = spelled(a, gold_words)
        pos = next((i for i, p in enumerate(pred_toks) if similar(a, p)), None)
        if at is not None and pos is not None:
            for k in gold_words[at: at + len(a)]:
                found[k] = pos if found[k] is None else found[k]
    return found


def _negation(pred: Tokens, positions: list[int], question_toks: set[str],
              gold_toks: list[str]) -> str | None:
    """The negation word that governs the matched gold words, if any. It governs them when

    * it comes at most 3 tokens before the first matched word, or between matched words, in the
      same clause as the next matched word ("the plague was *not* caused by bad air"; but "It was
      not in Paris, but in *Lyon*" does not negate Lyon), and is not part of an idiom that affirms
      what follows ("*none other than* Thomas Newcomen", "*not only*", "*nothing but*",
      "*not until* 1990"); or
    * it follows a matched word in its clause and negates the question's own words: the answer
      names the gold but denies what the question asks about it ("Which entities have powers of
      amendment?" -> "The Parliament has *no* ... amendment power").

    Negation words the gold itself contains ("would not be safe") do not count."""
    words, clauses = pred.words, pred.clauses

    def cue(j: int) -> bool:
        return words[j] in NEGATIONS and words[j] not in gold_toks

    for j in range(max(0, positions[0] - NEGATION_WINDOW), positions[-1]):
        governed = next(p for p in positions if p > j)
        following = tuple(words[j + 1: j + 3])
        if cue(j) and clauses[j] == clauses[governed] and not any(
                following[: len(idiom)] == idiom for idiom in AFFIRMING):
            return words[j]
    asked = question_toks - STOPWORDS
    for p in positions:
        for j in range(p + 1, min(len(words), p + 2 + NEGATION_WINDOW)):
            if clauses[j] != clauses[p]:
                break
            scope = range(j + 1, min(len(words), j + 2 + NEGATION_WINDOW))
            if cue(j) and any(words[k] in asked and clauses[k] == clauses[j] for k in scope):
                return words[j]
    return None


def _replacement(gold_words: list[str], gold_toks: list[str], pred_toks: list[str],
                 question_toks: set[str]) -> tuple[str, str] | None:
    """``(gold word, prediction word)`` when a content word of the gold is missing from the
    prediction and a different word of the same closed class stands there instead (compass
    directions, months, weekdays, seasons, colours, numbers, ...: "North Korea" -> "South
    Korea", "late 1970s" -> "early 1970s"). Words taken from the question do not count."""
    for k in gold_words:
        kind = kinds(k)
        if not kind or any(similar(k, p) for p in pred_toks):
            continue
        for p in pred_toks:
            if (p not in question_toks and kind & kinds(p)
                    and not any(similar(g, p) or similar(p, g) for g in gold_toks)):
                return k, p
    return None


def _slot_replacement(keys: list[str], gold_toks: list[str],
                      pred_toks: list[str]) -> tuple[str, str] | None:
    """``(gold word, prediction word)`` when a key word of the gold is missing and the prediction
    has another word in its place, next to the prediction's copy of the gold word's neighbour
    ("*plug* valve" -> "the *safety* valve", "Wesleyan Holiness *Consortium*" -> "... *Movement*").
    A word that starts with a missing initial fills its slot ("Arthur H. Compton" ~ "Arthur
    Holly Compton")."""
    gold = [t for t in gold_toks if t not in STOPWORDS]
    pred = [t for t in pred_toks if t not in STOPWORDS]

    def where(tok: str) -> int | None:
        return next((i for i, p in enumerate(pred) if similar(tok, p)), None)

    for k in keys:
        if k not in gold or where(k) is not None:
            continue
        j = gold.index(k)
        for neighbour, side in ((j - 1, 1), (j + 1, -1)):
            q = where(gold[neighbour]) if 0 <= neighbour < len(gold) else None
            if q is None or not 0 <= q + side < len(pred):
                continue
            slot = pred[q + side]
            if len(k) == 1 and slot.startswith(k):
                continue
            if not any(similar(g, slot) or similar(slot, g) for g in gold_toks):
                return k, slot
    return None


def _coordinated(keys: list[str], gold_toks: list[str]) -> bool:
    """Whether the gold is two items joined by "and" ("growth and investment"): GPT-4.1 wants both
    ("fully convey the gold"), even in a short answer that would otherwise pass with one."""
    if len(keys) != 2 or keys[0] not in gold_toks or keys[1] not in gold_toks:
        return False
    a, b = sorted((gold_toks.index(keys[0]), gold_toks.index(keys[1])))
    return "and" in gold_toks[a + 1: b]


def _weight(key: str) -> int:
    """A number with its scale word ("45 million" -> "45e6") is one key but two gold words."""
    return 2 if is_number(key) and "e" in key else 1


def _namer(*texts: str):
    """A function token -> the word of ``texts`` it came from ("thoma" -> "thomas"; "45e6" ->
    "45 million" where no single word gave it), to write reasons in the texts' own words."""
    names: dict[str, str] = {}
    for text in texts:
        for word in text.split():
            word = word.strip(".,;:!?()[]\"'“”‘’").lower()
            for t in tokens(word) if word else ():
                names.setdefault(t, word)
    return lambda tok: names.get(tok) or shown(tok)


#: The answer-shape rules (:mod:`.shapes`) in force: "paren" (a gold's parenthetical part is
#: optional), "date" (a date with the gold's month and another year), "unknown", "list",
#: "conflict" (see :meth:`MatchGrader._shape`), "qword" (a soft match on a question word is no
#: evidence, :func:`_find_keys`), "surname" (:func:`~.shapes.surname_only`), "denial" (a
#: question about a denial turns the negation rule off, :data:`~.words.DENIAL_RE`).
SHAPE_RULES = frozenset(("paren", "date", "unknown", "list", "conflict", "qword", "surname",
                         "denial"))


class MatchGrader(Grader):
    """Deterministic rule-based grader approximating SEAL's GPT-4.1 judge (the default grader).

    For each gold (a prediction is correct if it matches any gold):

    1. Grade only :func:`~.answers.answer_region` of the prediction (drop runaway continuations).
    2. Dates: a gold like "10 November 1483" is conveyed by its year ("1483", "November 10, 1483"),
       but a prediction naming a different month or day contradicts it. A month name counts only
       where it is used as a date ("It *may* have ended in June 1453" names June, not May).
    3. Key words: the gold's content words (stop words and period qualifiers such as "late" in
       "late 1970s" removed) that do not already appear in the question. Words copied from the
       question ("What type of *rally*..." -> gold "pep *rally*") say nothing about whether the
       answer is right; if every gold word is in the question, all are kept.
    4. Numbers carry sign and scale ("-40" is not "40", "2 million" is not "2 billion"). If the
       gold's key words contain numbers, at least one of them must appear in the prediction (a
       wrong number is a wrong answer whatever else matches). 1 is exempt: as "one" it is usually
       a pronoun ("one of the most common").
    5. Replacement: a gold word missing from the prediction and replaced by another word of its
       closed class (compass directions, months, weekdays, colours, numbers, ...) contradicts it.
    6. Negation: a negation that governs the matched gold words (see :func:`_negation`) makes the
       answer wrong unless the question itself is negated ("What does X not do?") or asks about
       a denial ("What did X deny them?").
    7. Coverage: the fraction of key words found in the prediction (soft word match, acronyms).
       Required coverage: all key words for golds of one or two key words; ``partial_threshold``
       (0.5) for longer golds, which GPT-4.1 accepts when paraphrased in part; and
       ``short_threshold`` (0.5) when the prediction itself is a short phrase of at most
       ``short_answer_tokens`` tokens (GPT-4.1 accepts "Euler" for "Leonhard Euler", "Antigen"
       for "an antigen from a pathogen") unless the gold is two items joined by "and".
    8. A partial match passed by rule 7 is wrong when the prediction puts another word in the
       place of a missing key word (:func:`_slot_replacement`: "The safety valve" for "plug
       valve").
    9. Answer shapes (:mod:`.shapes`, switched by :data:`SHAPE_RULES`): an answer that would pass
       is wrong when it declares it does not know, is a list of short candidates, or gives the
       gold number and another in the same role ("age 39 ... age 38"); a date with the gold's
       month but another year contradicts it. A gold's parenthetical part is optional, and a
       person's surname alone names the gold person ("Davis" for "Thomas Davis").
    """

    name = "match"

    def __init__(
        self,
        partial_threshold: float = 0.5,
        short_answer_tokens: int = 5,
        short_threshold: float = 0.5,
    ):
        self.partial_threshold = float(partial_threshold)
        self.short_answer_tokens = int(short_answer_tokens)
        self.short_threshold = float(short_threshold)

    def grade_texts(self, question: str, golds: list[str], prediction: str) -> Verdict:
        infos = [self.explain(question, g, prediction) for g in golds]
        if not infos:
            return Verdict(False, "no gold answer")
        best = next((i for i in infos if i["correct"]), infos[0])
        return Verdict(best["correct"], best["reason"])

    def explain(self, question: str, gold: str, prediction: str) -> dict:
        """The verdict for one gold with the evidence behind it: ``correct``, ``rule`` (a short
        name of the deciding rule), ``reason`` (a sentence), ``keys`` and ``coverage``. A gold's
        parenthetical part is optional ("probabilistic (or 'Monte Carlo')")."""
        info = self._explain(question, gold, prediction)
        short = without_parentheses(gold) if not info["correct"] and "paren" in SHAPE_RULES else None
        if short:
            alt = self._explain(question, short, prediction)
            if alt["correct"]:
                alt["reason"] += " (gold without its parenthetical part)"
                return alt
        return info

    def _explain(self, question: str, gold: str, prediction: str) -> dict:
        region = answer_region(prediction)
        pred = tokenize(region)
        pred_toks, gold_toks = pred.words, tokens(gold)
        info: dict = {"correct": False, "rule": "", "reason": "", "keys": [], "coverage": 0.0}
        name = _namer(gold, region)

        def words(toks) -> str:
            return ", ".join(map(name, toks))

        def verdict(correct: bool, rule: str, reason: str) -> dict:
            if correct and normalize_answer(region) == normalize_answer(gold):
                reason = "exact match"
            info.update(correct=correct, rule=rule, reason=reason)
            return info

        def replaced(a: str, b: str) -> dict:
            return verdict(False, "replaced", "gold word %r replaced by %r" % (name(a), name(b)))

        if not pred_toks or not gold_toks:
            return verdict(False, "empty", "empty prediction" if gold_toks else "empty gold answer")
        if self._is_date(gold_toks):
            ok, rule, reason = self._grade_date(gold_toks, pred_toks, words)
            clash = conflicting_date(gold_toks, pred_toks) if "date" in SHAPE_RULES else None
            if ok and clash:
                ok, rule, reason = False, "date-conflict", "gold year %s conflicts with %s" % clash
            info["coverage"] = float(ok)
            return verdict(ok, rule, reason)

        question_toks = set(tokens(question))
        keys = self._key_tokens(question_toks, gold_toks)
        info["keys"] = keys
        numbers = [t for t in keys if is_number(t) and t != "1"]
        matched_numbers = [t for t in numbers if any(number_matches(t, p) for p in pred_toks)]
        if numbers and not matched_numbers:
            return verdict(False, "number-missing", f"gold number {words(numbers)} missing")

        found = _find_keys(keys, gold, region, pred_toks, question_toks)
        positions = sorted(p for p in found.values() if p is not None)
        n_words = sum(_weight(k) for k in keys)
        coverage = sum(_weight(k) for k in keys if found[k] is not None) / n_words
        info["coverage"] = coverage
        missing = [k for k in keys if found[k] is None]

        gold_words = [t for t in gold_toks if t not in STOPWORDS]
        pair = _replacement(gold_words, gold_toks, pred_toks, question_toks)
        if pair:
            return replaced(*pair)
        denial = "denial" in SHAPE_RULES and DENIAL_RE.search(question)
        if positions and not question_toks & NEGATIONS and not denial:
            cue = _negation(pred, positions, question_toks, gold_toks)
            if cue is not None:
                return verdict(False, "negated", f"{name(cue)!r} negates the gold words")

        short = len(pred_toks) <= self.short_answer_tokens
        threshold = 1.0 if n_words <= 2 else self.partial_threshold
        if short and not _coordinated(keys, gold_toks):
            threshold = min(threshold, self.short_threshold)
        found_share = (f"{len(keys) - len(missing)} of {len(keys)} key words found "
                       f"(need {threshold:.0%})")
        if coverage < threshold - 1e-9:
            surname = surname_only(gold, region, question) if "surname" in SHAPE_RULES else None
            if surname and not matched_numbers:
                return verdict(True, "surname", f"surname {surname!r} names the gold person")
            return verdict(False, "coverage", f"{found_share}; missing {words(missing)}")
        pair = _slot_replacement(keys, gold_toks, pred_toks) if missing and short else None
        if pair:
            return replaced(*pair)
        shape = self._shape(region, gold, matched_numbers, pred_toks)
        if shape:
            return verdict(False, *shape)
        if matched_numbers:
            return verdict(True, "coverage", f"number {words(matched_numbers)} matches gold")
        all_found = f"all key words found ({words(keys)})"
        return verdict(True, "coverage", found_share if missing else all_found)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _shape(region: str, gold: str, matched_numbers: list[str],
               pred_toks: list[str]) -> tuple[str, str] | None:
        """``(rule, reason)`` when the answer's shape denies the credit its words would earn
        (:mod:`.shapes`): it declares it does not know, lists candidates, or gives the gold
        number and another in the same role."""
        if "unknown" in SHAPE_RULES:
            phrase = declares_unknown(region)
            if phrase:
                return "unknown", f"the answer declares it does not know ({phrase!r})"
        if "list" in SHAPE_RULES:
            n = candidate_list(region, gold)
            if n:
                return "candidates", f"a list of {n} candidates, not one answer"
        if "conflict" in SHAPE_RULES and matched_numbers:
            clash = conflicting_number(matched_numbers, pred_toks)
            if clash:
                return ("number-conflict",
                        "gold number %s and %s given in the same role" % tuple(map(shown, clash)))
        return None

    @staticmethod
    def _key_tokens(question_toks: set[str], gold_toks: list[str]) -> list[str]:
        content = [t for t in gold_toks if t not in STOPWORDS] or gold_toks
        content = [t for t in content if t not in QUALIFIERS] or content
        novel = [t for t in content if t not in question_toks]
        return novel or content

    @staticmethod
    def _is_date(gold_toks: list[str]) -> bool:
        return any(t in MONTHS for t in gold_toks) and any(
            t.isdigit() and len(t) == 4 for t in gold_toks
        )

    @staticmethod
    def _grade_date(gold_toks: list[str], pred_toks: list[str], words) -> tuple[bool, str, str]:
        pred_set = set(pred_toks)
        years = [t for t in gold_toks if t.isdigit() and len(t) == 4]
        if not all(y in pred_set for y in years):
            return False, "date-year-missing", f"gold year {words(years)} missing"
        pred_months = [t for t in pred_toks if t in MONTHS]
        if pred_months:
            # the prediction commits to a month (and maybe a day): they must agree with the gold
            gold_months = [t for t in gold_toks if t in MONTHS]
            if not all(t in pred_set for t in gold_months):
                return (False, "date-month-differs",
                        f"month {words(pred_months)} differs from gold {words(gold_months)}")
            days = [t for t in gold_toks if t.isdigit() and len(t) <= 2]
            if days and not all(d in pred_set for d in days):
                return False, "date-day-differs", f"gold day {words(days)} missing"
        return True, "date", f"year {words(years)} matches gold"
