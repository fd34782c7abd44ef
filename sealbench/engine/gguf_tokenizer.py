"""A correct fast tokenizer for SentencePiece-style ("llama") GGUF vocabularies.

transformers 5.17 turns a GGUF whose ``tokenizer.ggml.model`` is ``"llama"`` into a *Unigram*
tokenizer over the GGUF scores (``GGUFGemmaConverter`` in transformers/integrations/ggml.py). For a
vocabulary trained as SentencePiece **BPE** -- Gemma 3's, whose scores are ``-merge_rank`` -- a
Viterbi search over those scores prefers many short frequent pieces: Gemma 3 270M reads
"The capital of France is" as ``The ▁c ap it al ▁of ▁Fr an ce ▁is`` with no BOS, and the model then
only says " is is is". The GGUF's own tokenizer (llama.cpp's ``llm_tokenizer_spm``, src/llama-vocab.cpp)
gives ``<bos> The ▁capital ▁of ▁France ▁is``.

The rule llama.cpp applies, per run of ordinary text (source: ``llm_tokenizer_spm_session`` and
``llama_vocab::impl::tokenize`` in ggml-org/llama.cpp src/llama-vocab.cpp):

1. split the text on special tokens first: user-defined tokens (type 4: whitespace runs, "\\n",
   HTML tags in Gemma) always, control/unknown tokens only when special tokens are parsed;
2. optionally prefix a space (``tokenizer.ggml.add_space_prefix``), then write every space as "▁";
3. start from one symbol per Unicode character and repeatedly merge the adjacent pair whose
   concatenation is a vocabulary token with the **highest score** (ties: the leftmost pair);
4. a symbol that is not a token (a character outside the vocabulary) becomes its UTF-8 bytes as
   ``<0xNN>`` tokens (byte fallback);
5. BOS/EOS as ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` say.

:func:`build_tokenizer` expresses steps 2-5 as an HF ``tokenizers`` BPE model whose merge list is
every split ``(a, b)`` of every normal token ``a+b`` (both halves tokens), ranked by the score of
``a+b``: HF's BPE (lowest rank first, then leftmost) then performs the same greedy highest-score
merge loop, and the result is a normal ``PreTrainedTokenizerFast`` that ``save_pretrained`` writes
and ``AutoTokenizer.from_pretrained`` reloads. :func:`spm_encode` is a direct Python port of the
llama.cpp loop, used as the reference at conversion time and in tests. Measured on Gemma 3 270M
(2026-11-30): 0 differences from :func:`spm_encode` on the 23,207 SQuAD v1.1 dev contexts, questions
and answers (2.4 M characters) and on 7,000 random strings (repeated-character runs, rare Unicode);
0 differences from Google's ``sentencepiece`` BPE model rebuilt from the same pieces/scores/types
on 22,637 texts; 0 in 18,000 strings over random toy vocabularies built to provoke merge ties. A
Unigram model over the same scores (transformers' choice) differed on 1,000 of 1,000 SQuAD questions
and used 2.0x the tokens.

Known, deliberate differences from llama.cpp (none affects ordinary text): merges that would form a
control, user-defined or ``<0xNN>`` token out of literal text are not made (llama.cpp would, e.g.
for the literal string "<0x41>"), and special tokens written in the text are recognised (HF
default) where llama.cpp's ``parse_special=False`` would tokenise them as text.

The GGUF metadata is read with the pinned ``gguf`` package (``gguf.GGUFReader``), which this module
needs only when it reads a file (conversion time, as transformers does for any GGUF).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

# tokenizer.ggml.token_type values (gguf-py gguf/constants.py TokenType, llama.cpp LLAMA_TOKEN_TYPE_*)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁", SentencePiece's visible space

# Strings on which the converted tokenizer is compared with the reference at conversion time.
PROBES = (
    "The capital of France is",
    "Hello world! How are you today? I'm fine, thanks.",
    "In 1873, Elodie Marwick melted 412 kg of quartz at 1,700\u00b0C.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2014 \u00fcber Stra\u00dfe, \u65e5\u672c\u8a9e\u306e\u6587\u7ae0, \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442.",
    "Emoji \U0001f600\U0001f680 and symbols \u2211\u221a\u03c0 \u2192 \u2764\ufe0f \U0001f9ec\U0001fae0",
    "def f(x):\n    return x**2  # square\n\n\tdone",
    "  leading and trailing spaces  ",
    "aaaaaaaa ------- ....... ======= !!!!!!",
)


@dataclass
class GGUFVocab:
    """The tokenizer metadata of a GGUF file (keys ``tokenizer.ggml.*``, GGUF spec docs/gguf.md).

    ``tokens``/``scores``/``types`` are parallel lists indexed by token id; ids are ``None`` when the
    file does not set them.
    """
    model: str
    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = True
    add_eos: bool = False
    add_space_prefix: bool = True
    chat_template: str | None = None
    license: str | None = None  # general.license, e.g. "gemma"
    ids: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.ids:
            self.ids = {t: i for i, t in enumerate(self.tokens)}

    def token(self, i: int | None) -> str | None:
        return None if i is None or not 0 <= i < len(self.tokens) else self.tokens[i]


def read_metadata(gguf_path: str | Path, prefixes: tuple[str, ...] = ("tokenizer.", "general.")) -> dict:
    """The GGUF key/value metadata whose keys start with ``prefixes``, read by ``gguf.GGUFReader``:
    strings as ``str``, arrays as lists, numbers and bools as Python scalars. Raises ``ValueError``
    for a file that is not GGUF and ``OSError`` if it cannot be read."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    return {key: f.contents() for key, f in reader.fields.items() if key.startswith(prefixes)}


def read_vocab(gguf_path: str | Path) -> GGUFVocab:
    """Read the ``tokenizer.ggml.*`` metadata of a GGUF file.

    Defaults follow llama.cpp for the "llama" (SPM) model: add_bos true, add_eos false,
    add_space_prefix true (``llama_vocab::impl::load``). Raises ``KeyError`` when the file has no
    ``tokenizer.ggml.tokens``, plus what :func:`read_metadata` raises.
    """
    meta = read_metadata(gguf_path)
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise KeyError(f"{gguf_path} has no tokenizer.ggml.tokens")
    model = meta.get("tokenizer.ggml.model", "llama")
    spm = model == "llama"
    return GGUFVocab(
        model=model, tokens=tokens, scores=[float(s) for s in meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)],
        types=[int(t) for t in meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)],
        bos_id=meta.get("tokenizer.ggml.bos_token_id"), eos_id=meta.get("tokenizer.ggml.eos_token_id"),
        unk_id=meta.get("tokenizer.ggml.unknown_token_id"), pad_id=meta.get("tokenizer.ggml.padding_token_id"),
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", spm)),
        add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", spm)),
        chat_template=meta.get("tokenizer.chat_template"), license=meta.get("general.license"),
    )


def is_spm(vocab: GGUFVocab) -> bool:
    """True for a SentencePiece-style vocabulary with merge scores (``model == "llama"``, scores
    not all equal) -- the case :func:`build_tokenizer` handles."""
    return vocab.model == "llama" and len(set(vocab.scores[:2048])) > 1


def spm_merges(vocab: GGUFVocab) -> list[tuple[str, str]]:
    """Every split ``(a, b)`` of every normal token ``a+b`` where ``a`` and ``b`` are tokens, ordered
    by the score of ``a+b``, highest first (ties: token id, then shorter left part).

    Raises nothing; a vocabulary of n normal tokens of mean length L costs O(n*L) dict look-ups
    (Gemma 3: 262144 tokens, ~515k merges, ~2 s).
    """
    ids, tokens, scores, types = vocab.ids, vocab.tokens, vocab.scores, vocab.types
    ranked = []
    for i, tok in enumerate(tokens):
        if types[i] != NORMAL or len(tok) < 2:
            continue
        for k in range(1, len(tok)):
            if tok[:k] in ids and tok[k:] in ids:
                ranked.append((-scores[i], i, k))
    ranked.sort()
    return [(tokens[i][:k], tokens[i][k:]) for _, i, k in ranked]


def build_tokenizer(vocab: GGUFVocab, model_max_length: int | None = None):
    """A ``PreTrainedTokenizerFast`` that tokenises as llama.cpp's SPM tokenizer does.

    Pipeline: added tokens (control, unknown, unused: special; user-defined: not special; all
    matched on the raw text) -> normalizer [Prepend("▁") if add_space_prefix] + Replace(" ", "▁")
    -> no pre-tokenizer (llama.cpp merges over the whole run) -> BPE(merges=:func:`spm_merges`,
    byte_fallback) -> BOS/EOS added as the file says (``add_bos_token``/``add_eos_token``). Decoding reverses it
    (▁ -> space, <0xNN> bytes fused to UTF-8, the prefix space stripped).
    Raises ``ValueError`` when the vocabulary is not SentencePiece-style (see :func:`is_spm`).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    if not is_spm(vocab):
        raise ValueError(f"not a SentencePiece-style GGUF vocabulary (tokenizer.ggml.model={vocab.model!r})")
    unk = vocab.token(vocab.unk_id)
    tk = Tokenizer(models.BPE(vocab=dict(vocab.ids), merges=spm_merges(vocab), unk_token=unk,
                              byte_fallback=True, fuse_unk=False, dropout=None))
    norm = [normalizers.Replace(" ", SPACE)]
    if vocab.add_space_prefix:
        norm.insert(0, normalizers.Prepend(SPACE))
    tk.normalizer = normalizers.Sequence(norm)
    dec = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        dec.append(decoders.Strip(content=" ", left=1, right=0))
    tk.decoder = decoders.Sequence(dec)
    added = [AddedToken(t, special=ty != USER_DEFINED, normalized=False)
             for t, ty in zip(vocab.tokens, vocab.types) if ty in (UNKNOWN, CONTROL, USER_DEFINED, UNUSED)]
    tk.add_tokens(added)  # ids are already in the BPE vocab, so they keep their GGUF ids
    # add_bos_token/add_eos_token make transformers install the TemplateProcessing
    # "<bos>:0 $A:0 [<eos>:0]" (TokenizersBackend.update_post_processor) and record it on save.
    kwargs = dict(bos_token=vocab.token(vocab.bos_id), eos_token=vocab.token(vocab.eos_id), unk_token=unk,
                  pad_token=vocab.token(vocab.pad_id), add_bos_token=vocab.add_bos,
                  add_eos_token=vocab.add_eos, clean_up_tokenization_spaces=False)
    if model_max_length:
        kwargs["model_max_length"] = model_max_length
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, **{k: v for k, v in kwargs.items() if v is not None})
    if vocab.chat_template:
        tokenizer.chat_template = vocab.chat_template
    return tokenizer


def spm_encode(vocab: GGUFVocab, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
    """Token ids for ``text`` by a direct port of llama.cpp's SPM tokenizer (see module docstring).

    Slow (pure Python, ~1 ms per 100 characters); it is the reference, not the production path.
    Raises ``KeyError`` if a byte token ``<0xNN>`` the text needs is missing from the vocabulary.
    """
    specials = [i for i, ty in enumerate(vocab.types)
                if ty == USER_DEFINED or (parse_special and ty in (CONTROL, UNKNOWN))]
    specials.sort(key=lambda i: -len(vocab.tokens[i].encode()))
    fragments: list[str | int] = [text] if text else []
    for sid in specials:  # tokenizer_st_partition: longest special token first
        s = vocab.tokens[sid]
        out: list[str | int] = []
        for frag in fragments:
            if isinstance(frag, int) or s not in frag:
                out.append(frag)
                continue
            for j, piece in enumerate(frag.split(s)):
                if j:
                    out.append(sid)
                if piece:
                    out.append(piece)
        fragments = out
    ids = [vocab.bos_id] if add_special and vocab.add_bos else []
    prev_special = True
    for frag in fragments:
        if isinstance(frag, int):
            ids.append(frag)
            prev_special = True
            continue
        piece = (" " if vocab.add_space_prefix and prev_special else "") + frag
        ids.extend(_spm_session(vocab, piece.replace(" ", SPACE)))
        prev_special = False
    if add_special and vocab.add_eos:
        ids.append(vocab.eos_id)
    return ids


def _spm_session(vocab: GGUFVocab, text: str) -> list[int]:
    """``llm_tokenizer_spm_session::tokenize`` on one escaped run of text."""
    ids, scores = vocab.ids, vocab.scores
    n = len(text)
    start = list(range(n))
    size = [1] * n                      # characters in each symbol; 0 once merged away
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n)) + [-1]
    queue: list[tuple[float, int, int, int]] = []

    def add(left: int, right: int) -> None:
        if left == -1 or right == -1:
            return
        piece = text[start[left]:start[left] + size[left] + size[right]]
        tid = ids.get(piece)
        if tid is not None:  # highest score first, then leftmost
            heapq.heappush(queue, (-scores[tid], left, right, len(piece)))

    for i in range(1, n):
        add(i - 1, i)
    while queue:
        _, left, right, length = heapq.heappop(queue)
        if size[left] == 0 or size[right] == 0 or size[left] + size[right] != length:
            continue
        size[left] += size[right]
        size[right] = 0
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        add(prev[left], left)
        add(left, nxt[left])
    out: list[int] = []
    i = 0 if n else -1
    while i != -1:
        piece = text[start[i]:start[i] + size[i]]
        tid = ids.get(piece)
        if tid is not None:
            out.append(tid)
        else:  # merged symbols are always tokens; only single characters fall back to bytes
            out.extend(ids[f"<0x{b:02X}>"] for b in piece.encode("utf-8"))
        i = nxt[i]
    return out


def disagreements(tokenizer, vocab: GGUFVocab, texts=PROBES) -> list[str]:
    """The texts on which ``tokenizer(text)["input_ids"]`` differs from :func:`spm_encode` (with
    special tokens added as the GGUF says). Empty means they agree. Raises nothing of its own."""
    return [t for t in texts if list(tokenizer(t)["input_ids"]) != spm_encode(vocab, t)]


def choose_tokenizer(gguf_path: str | Path, hf_tokenizer, model_max_length: int | None = None):
    """Return ``(tokenizer, note, general.license)`` for a GGUF that transformers converted into
    ``hf_tokenizer``: that tokenizer when the vocabulary is not SentencePiece-style or when it agrees
    with :func:`spm_encode` on :data:`PROBES`, else :func:`build_tokenizer`'s (keeping transformers'
    chat template if the GGUF has none). ``note`` says which, for sealbench.json.
    Raises ``ValueError`` if even the rebuilt tokenizer disagrees with the reference, plus whatever
    :func:`read_vocab` raises."""
    vocab = read_vocab(gguf_path)
    if not is_spm(vocab):
        return hf_tokenizer, f"transformers ({vocab.model} GGUF tokenizer)", vocab.license
    bad = disagreements(hf_tokenizer, vocab)
    if not bad:
        return hf_tokenizer, "transformers (agrees with llama.cpp's SPM rule)", vocab.license
    ours = build_tokenizer(vocab, model_max_length)
    if disagreements(ours, vocab):
        raise ValueError(f"cannot reproduce the SentencePiece tokenizer of {gguf_path}")
    if not ours.chat_template and getattr(hf_tokenizer, "chat_template", None):
        ours.chat_template = hf_tokenizer.chat_template
    note = (f"sealbench.engine.gguf_tokenizer (transformers' conversion differed from llama.cpp's "
            f"SPM tokenizer on {len(bad)}/{len(PROBES)} probe texts)")
    return ours, note, vocab.license
