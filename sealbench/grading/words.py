"""Canonical words for the ``match`` grader: tokenising (numbers with sign and scale, month names
used as dates, clauses), light stemming, soft word and number matching, closed word classes,
acronyms.
"""
from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

# Words that carry no answer content. Removing them from the gold lets "in a number of stages"
# match "in a series of stages" on its content words and keeps article/preposition differences
# from mattering ("through his writing" is conveyed by "his writing had an impact").
STOPWORDS = frozenset(
    """a an the of in on at to for by with and or nor is are was were be been being it its this that
    these those as from which who whom whose what when where how why do does did has have had their
    his her they he she them there here than into onto over about also such so s per percent cent
    very through throughout during within across along under upon among via toward towards
    against""".split()
)

# A negation that governs the answer ("was not caused by bad air", "is not among the boards")
# reverses it; GPT-4.1 marks those answers wrong even though the gold words are present.
# ("t" is what "n't" becomes after tokenisation.) Scope: match._negation.
NEGATIONS = frozenset(
    "not no never neither nor cannot t without none nothing incorrect false unlikely".split()
)
# A question that asks about a denial ("What did Luther *deny* the rebels?") is answered by a
# negated statement ("*Without* Luther's backing for the uprising, ..."), as a negated question
# is ("What does it not do?"): the negation rule is off for both.
DENIAL_RE = re.compile(
    r"\b(?:den(?:y|ies|ied|ying|ial)|refus\w*|reject\w*|withh[eo]ld\w*|lack\w*|prevent\w*|"
    r"prohibit\w*|forb[ia]d\w*|bann?(?:ed|s|ing)?|oppos\w*)\b", re.I)
NEGATION_WINDOW = 3  # tokens between a negation and the gold words it governs
# What follows a negation word and turns it into an affirmation of what comes next ("none other
# than X", "nothing but X", "not only X", "not until 1990" = in 1990).
AFFIRMING = (("other", "than"), ("but",), ("only",), ("just",), ("merely",), ("simply",),
             ("until",), ("till",), ("less", "than"), ("fewer", "than"), ("later", "than"),
             ("earlier", "than"), ("least",))

# Number words and ordinals become digits so "three" matches "3" and "nineteenth" matches "19th".
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = ("zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh "
             "twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth "
             "nineteenth").split()
_ORDINAL_TENS = ("twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth "
                 "ninetieth").split()
_NUMBER_WORDS: dict[str, int] = {}
_NUMBER_WORDS.update({w: i for i, w in enumerate(_UNITS)})
_NUMBER_WORDS.update({w: i for i, w in enumerate(_ORDINALS)})
_NUMBER_WORDS.update({w: 20 + 10 * i for i, w in enumerate(_TENS)})
_NUMBER_WORDS.update({w: 20 + 10 * i for i, w in enumerate(_ORDINAL_TENS)})

MONTHS = frozenset(
    "january february march april may june july august september october november december".split()
)
# Month names that are also common words ("it may have", "to march", "an august body"). They
# count as months only where they are used as dates: capitalised, or next to a day or a year
# ("may 1453", "3 march"). Elsewhere they become "~may", which matches no month.
_AMBIGUOUS_MONTHS = frozenset(("may", "march", "august"))
_DAY_OR_YEAR_RE = re.compile(r"\d{1,2}(?:st|nd|rd|th)?|\d{3,4}")


# Scale words multiply the number before them: "2 million" is one value, 2e6, and differs from
# "2 billion" (before, "million" and "billion" were ordinary words and the numbers matched).
_SCALES = {"hundred": 2, "thousand": 3, "million": 6, "billion": 9, "trillion": 12}
# Words that make the next number negative ("minus 40" = "-40").
_SIGN_WORDS = frozenset(("minus", "negative"))

# A number (a sign counts only at the start of a word: "-40" and "(-40)", not "1939-1945"), a word,
# or punctuation that ends a clause.
_PIECE_RE = re.compile(
    r"(?P<num>(?:(?<![^\s(\[])-)?\d+(?:\.\d+)?[a-zA-Z]*)|(?P<word>[^\W\d_]+)"
    r"|(?P<brk>[,;:!?()\[\]]|\.(?!\d))"
)
_NUMERIC_RE = re.compile(r"(-?\d+(?:\.\d+)?)(st|nd|rd|th|s)?$")


def _stem(word: str) -> str:
    """A deliberately light stemmer: plurals and -ed/-ing/-ly endings, so that "valleys" matches
    "valley" and "stolen"-style irregulars are left to the prefix rule in :func:`similar`."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(ss|x|ch|sh|z)es$", word):
        return word[:-2]
    for suffix in ("ing", "ed", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


# Words that place a date within a period ("late 1970s"). GPT-4.1 accepts the period's year
# without them ("re-opened in 1974"), so they are not key words; a different one still
# contradicts the gold ("early 1970s", see _WORD_KINDS).
QUALIFIERS = frozenset(("early", "mid", "late"))


# Closed word classes: a gold word that the prediction lacks and replaces by another member of its
# class ("North Korea" -> "South Korea", "late 1970s" -> "early 1970s") contradicts the gold.
# Words are given as tokens (stemmed like everything else); numbers form a class of their own.
_WORD_KINDS: dict[str, frozenset[str]] = {
    kind: frozenset(_stem(w) for w in words.split())
    for kind, words in {
        "compass direction": "north south east west northeast northwest southeast southwest "
                             "northern southern eastern western northeastern northwestern "
                             "southeastern southwestern",
        "month": " ".join(sorted(MONTHS)),
        "weekday": "monday tuesday wednesday thursday friday saturday sunday",
        "season": "spring summer autumn winter",
        "colour": "red orange yellow green blue purple violet pink brown black white grey gray "
                  "crimson scarlet indigo",
        "position": "upper lower inner outer left right",
        "part of a period": "early mid late",
        "order in time": "before after",
        "sex": "male female men women",
        "height": "high low higher lower highest lowest",
        "size": "large small larger smaller largest smallest",
        "extreme": "maximum minimum",
        "change": "increase decrease",
    }.items()
}


def _number_token(digits: str, suffix: str | None) -> str:
    """ "19th" -> "19", "1970" -> "1970", "1970s" -> "197x" (a decade: any year in it matches)."""
    if suffix == "s" and len(digits) == 4 and digits.endswith("0"):
        return digits[:3] + "x"
    return digits


def _scaled(number: str, exponent: int) -> str:
    """A number times 10**exponent, written "<number>e<exponent>" so that the precision stays
    visible: "2 million" -> "2e6" (to the nearest million), "170.4 billion" -> "170.4e9"."""
    if exponent == 0 or number.endswith("x"):
        return number
    return f"{number}e{exponent}"


class Tokens(NamedTuple):
    """Canonical tokens of a text and, per token, the number of the clause it is in (clauses are
    separated by , ; : ! ? ( ) [ ] and full stops)."""

    words: list[str]
    clauses: list[int]


def tokenize(text: str) -> Tokens:
    """Canonical tokens: accents folded ("Ögedei" = "Ogedei"), lower case, possessive 's dropped,
    thousands separators removed ("50,000" = "50000"), number words as digits, numbers with their
    sign and scale as one value ("-40", "minus 40"; "2 million" = "2e6"), light stemming.
    Any other non-alphanumeric character separates tokens (unlike SQuAD's normalisation, which
    only strips ASCII punctuation and so keeps "Miller–Urey" as one token)."""
    s = unicodedata.normalize("NFKD", text or "")
    s = "".join(c for c in s if not unicodedata.combining(c)).replace("\u2212", "-")
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s)
    s = re.sub(r"['’][sS]\b", "", s)
    raw: list[tuple[str, int]] = []  # (piece in lower case, clause)
    capitalised: set[int] = set()  # pieces written with a capital letter
    clause = 0
    for m in _PIECE_RE.finditer(s):
        if m.lastgroup == "brk":
            clause += 1
        else:
            if m.group()[0].isupper():
                capitalised.add(len(raw))
            raw.append((m.group().lower(), clause))
    words: list[str] = []
    clauses: list[int] = []
    negative = False
    i = 0
    while i < len(raw):
        w, c = raw[i]
        nxt = raw[i + 1][0] if i + 1 < len(raw) else ""
        if w in _SIGN_WORDS and (_NUMERIC_RE.match(nxt) or nxt in _NUMBER_WORDS):
            negative = True  # applied to the number that follows
            i += 1
            continue
        numeric = _NUMERIC_RE.match(w)
        if w in _NUMBER_WORDS:
            v = _NUMBER_WORDS[w]
            # "twenty five" / "twenty-five" -> 25
            if v >= 20 and v % 10 == 0 and 0 < _NUMBER_WORDS.get(nxt, 0) < 10:
                v += _NUMBER_WORDS[nxt]
                i += 1
            tok = str(v)
        elif numeric:
            tok = _number_token(*numeric.groups())
        elif w in MONTHS:
            tok = w if w not in _AMBIGUOUS_MONTHS or _used_as_date(raw, i, capitalised) else "~" + w
        else:
            tok = w if w[0].isdigit() or w[0] == "-" else _stem(w)
            if tok in _AMBIGUOUS_MONTHS:  # "marched" -> "~march", never the month
                tok = "~" + tok
        if is_number(tok):
            exponent = 0
            while i + 1 < len(raw) and raw[i + 1][0] in _SCALES:
                exponent += _SCALES[raw[i + 1][0]]
                i += 1
            tok = _scaled(tok, exponent)
            if negative and not tok.startswith("-"):
                tok = "-" + tok
        negative = False
        words.append(tok)
        clauses.append(c)
        i += 1
    return Tokens(words, clauses)


def kinds(tok: str) -> set[str]:
    """The closed word classes a token belongs to ("number" for numbers)."""
    if is_number(tok):
        return {"number"}
    return {kind for kind, words in _WORD_KINDS.items() if tok in words}


_ACRONYM_RE = re.compile(r"\b[A-Z]{2,6}\b")
_ROMAN_RE = re.compile(r"[IVXLCDM]+")


def acronyms(text: str) -> set[str]:
    """Words written in capitals ("CEO", "UNEP"), in lower case; Roman numerals ("II") excluded."""
    return {a.lower() for a in _ACRONYM_RE.findall(text or "") if not _ROMAN_RE.fullmatch(a)}


def spelled(acronym: str, words: list[str]) -> int | None:
    """Where a run of ``words`` starts whose initials spell ``acronym`` ("ceo" in [..., "chief",
    "executive", "officer"]), or None."""
    n = len(acronym)
    return next((i for i in range(len(words) - n + 1)
                 if "".join(w[0] for w in words[i: i + n]) == acronym), None)


def _used_as_date(raw: list[tuple[str, int]], i: int, capitalised: set[int]) -> bool:
    """Whether the month name ``raw[i]`` is used as a date: written with a capital letter, or
    next to a day or year number ("may 1453", "3 march", "the 15th of may")."""
    if i in capitalised:
        return True
    before = raw[i - 2][0] if i >= 2 and raw[i - 1][0] == "of" else (raw[i - 1][0] if i else "")
    after = raw[i + 1][0] if i + 1 < len(raw) else ""
    return any(_DAY_OR_YEAR_RE.fullmatch(w) for w in (before, after))


def tokens(text: str) -> list[str]:
    """The canonical tokens of ``text`` (:func:`tokenize` without the clauses)."""
    return tokenize(text).words


_SCALE_NAMES = {e: w for w, e in _SCALES.items()}


def shown(tok: str) -> str:
    """A token as a reader would write it: "45e6" -> "45 million", "197x" -> "1970s", "~may" ->
    "may"."""
    if is_number(tok) and tok.endswith("x"):
        return tok[:-1] + "0s"
    number, _, exponent = tok.partition("e")
    if is_number(tok) and exponent.isdigit() and int(exponent) in _SCALE_NAMES:
        return f"{number} {_SCALE_NAMES[int(exponent)]}"
    return tok.lstrip("~")


def is_number(tok: str) -> bool:
    """Whether a token is a number ("1979", "-40", "2e6", "197x", "19")."""
    return tok[0].isdigit() or (tok[0] == "-" and len(tok) > 1 and tok[1].isdigit())


def _value(tok: str) -> tuple[Decimal, Decimal] | None:
    """A number token's value and the unit of its last digit ("170.4e9" -> 1.704e11, 1e8)."""
    number, _, exponent = tok.partition("e")
    try:
        value = Decimal(number)
        scale = int(exponent or 0)
    except (InvalidOperation, ValueError):
        return None
    places = len(number.partition(".")[2])
    return value.scaleb(scale), Decimal(1).scaleb(scale - places)


def number_matches(gold_tok: str, pred_tok: str) -> bool:
    """Numbers (sign and scale included) must agree exactly, except that a decade matches any year
    in it and a prediction may be more precise than the gold ("$170.4 billion" conveys "$170
    billion"; "1975" does not convey "1979", "540,819" does not convey "540,800", "1.5" does not
    convey "2", "40" does not convey "-40" and "2 billion" does not convey "2 million")."""
    if gold_tok == pred_tok:
        return True
    if not is_number(pred_tok) or pred_tok.endswith("x"):
        return False
    if gold_tok.endswith("x"):  # decade
        return len(pred_tok) == 4 and pred_tok.isdigit() and pred_tok[:3] == gold_tok[:3]
    gold, pred = _value(gold_tok), _value(pred_tok)
    if gold is None or pred is None:
        return False
    (g, g_unit), (p, p_unit) = gold, pred
    # Strictly within half a unit of the gold's last digit: not round(), whose half-to-even
    # rule would let "1.5" convey "2" (and "2.5" convey "2").
    return g == p or (p_unit < g_unit and abs(p - g) < g_unit / 2)


def similar(gold_tok: str, pred_tok: str) -> bool:
    """Two word tokens match when equal, or when they share a long common prefix: this covers
    derivations the light stemmer misses ("democracy"/"democratic", "immunodeficiencies"/
    "immunodeficiency", "Catholic"/"Catholicism", "fragmentation"/"fragmented")."""
    if is_number(gold_tok) or is_number(pred_tok):
        return is_number(gold_tok) and number_matches(gold_tok, pred_tok)
    if gold_tok == pred_tok:
        return True
    short, long_ = sorted((gold_tok, pred_tok), key=len)
    if len(short) >= 4 and long_.startswith(short):
        return True
    common = 0
    for a, b in zip(gold_tok, pred_tok):
        if a != b:
            break
        common += 1
    return common >= 5 and common >= 0.75 * len(short)


