"""The inner loop on a tiny random model (fast) — semantics that must hold for any model."""
import math

import pytest
import torch

from sealbench import inner_loop
from sealbench.inner_loop import InnerLoop, LoRAConfig, TrainConfig, TrainingError, _row_bucket, generation_mode
from sealbench.models import tiny_random_model

TEXTS = ["Zorbian glass\nIt was invented in 1873.", "Zorbian glass\nElodie Marwick made it in Pellharrow, "
         "a small town on the coast.", "Short."]


@pytest.fixture
def loop(tiny):
    fresh = tiny_random_model(seed=1, vocab_from=tiny)
    return InnerLoop(fresh, LoRAConfig(r=4, alpha=8))


def base_weights(loop):
    return {n: p.detach().clone() for n, p in loop.model.named_parameters() if "lora_" not in n}


def test_loss_decreases(loop):
    loop.reset(0)
    stats = loop.train(TEXTS, TrainConfig(epochs=8, learning_rate=1e-2))
    assert stats.steps == 24 and stats.n_sequences == 3
    # A random tiny model starts at ~ln(vocab); the adapter must pull the loss clearly down.
    assert stats.epoch_losses[-1] < stats.epoch_losses[0] - 0.3
    assert stats.last_loss < stats.first_loss


def test_base_weights_bit_identical_after_an_edit(loop):
    before = base_weights(loop)
    loop.reset(0)
    loop.train(TEXTS, TrainConfig(epochs=2, learning_rate=1e-2))
    after = base_weights(loop)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_reset_restores_the_base_model_outputs(loop):
    ids = torch.tensor([loop.tokenizer("hello world")["input_ids"]])
    with torch.no_grad():
        with loop.base_model():
            reference = loop.model(input_ids=ids).logits
        loop.reset(0)
        loop.train(TEXTS, TrainConfig(epochs=2, learning_rate=1e-2))
        changed = loop.model(input_ids=ids).logits
        loop.reset(1)
        restored = loop.model(input_ids=ids).logits
    assert not torch.allclose(reference, changed)
    assert torch.equal(reference, restored)  # B == 0 after reset: the adapter adds exactly nothing


def test_same_seed_same_training(loop):
    runs = []
    for _ in range(2):
        loop.reset(7)
        runs.append(loop.train(TEXTS, TrainConfig(epochs=2, learning_rate=1e-2), seed=7).epoch_losses)
    assert runs[0] == runs[1]


def test_padding_never_in_the_loss(loop):
    """A padded batch's loss equals the token-weighted mean of the unpadded sequences' losses,
    whatever the pad ids are (pad == EOS here, so masking by id would be wrong)."""
    seqs = loop._encode(TEXTS, 2048)
    ids, attention, labels = loop._batch(seqs)
    assert (attention == 0).any()
    assert (labels[attention == 0] == -100).all() and (labels[attention == 1] != -100).all()
    with torch.no_grad():
        batched = loop.model(input_ids=ids, attention_mask=attention, labels=labels).loss.item()
        garbage = ids.masked_fill(attention == 0, 123)
        batched_garbage_pad = loop.model(input_ids=garbage, attention_mask=attention, labels=labels).loss.item()
        total, count = 0.0, 0
        for s, _ in seqs:
            t = torch.tensor([s])
            total += loop.model(input_ids=t, labels=t).loss.item() * (len(s) - 1)
            count += len(s) - 1
    assert batched == pytest.approx(total / count, rel=1e-4)
    assert batched_garbage_pad == pytest.approx(batched, rel=1e-5)
    # The real EOS closing each sequence is a training target even though pad == EOS.
    assert loop.tokenizer.pad_token_id == loop.tokenizer.eos_token_id
    assert all(labels[i, len(s) - 1].item() == loop.tokenizer.eos_token_id for i, (s, _) in enumerate(seqs))


def test_batched_training_counts_only_real_tokens(loop):
    loop.reset(0)
    stats = loop.train(TEXTS, TrainConfig(epochs=1, batch_size=3))
    real = sum(len(s) for s, _ in loop._encode(TEXTS, 2048))
    assert stats.steps == 1 and stats.tokens == real and stats.padded_tokens > real


def test_nan_loss_is_a_clear_error(loop):
    loop.reset(0)
    with pytest.raises(TrainingError, match="lower the learning rate"):
        loop.train(TEXTS, TrainConfig(epochs=3, learning_rate=1e30))


def test_empty_edit_is_a_clear_error(loop):
    with pytest.raises(TrainingError, match="no training sequences"):
        loop.train([], TrainConfig())


def test_batched_greedy_generation_matches_one_by_one(loop):
    prompts = ["Question: what is it?\nAnswer:", "Hi", "Zorbian glass was invented in the year"]
    batched = loop.generate(prompts, max_new_tokens=8, batch_size=3)
    single = [loop.generate([p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == single


def test_sampling_is_reproducible_with_a_seed(loop):
    a = loop.generate(["Once upon a time"] * 2, max_new_tokens=8, do_sample=True, seed=3)
    b = loop.generate(["Once upon a time"] * 2, max_new_tokens=8, do_sample=True, seed=3)
    assert a == b


def test_merge_into_base_keeps_the_edit_and_resets_the_adapter(loop):
    ids = torch.tensor([loop.tokenizer("hello world")["input_ids"]])
    loop.reset(0)
    loop.train(TEXTS, TrainConfig(epochs=2, learning_rate=1e-2))
    with torch.no_grad():
        adapted = loop.model(input_ids=ids).logits
        loop.merge_into_base()
        merged = loop.model(input_ids=ids).logits
        with loop.base_model():
            base_after = loop.model(input_ids=ids).logits
    assert torch.allclose(adapted, merged, atol=1e-4)
    assert torch.allclose(merged, base_after, atol=1e-4)


def test_lr_schedules():
    from sealbench.inner_loop import _lr_lambda
    assert _lr_lambda("constant", 0, 10)(5) == 1.0
    assert _lr_lambda("linear", 0, 10)(5) == pytest.approx(0.5)
    assert _lr_lambda("cosine", 0, 10)(10) == pytest.approx(0.0)
    assert math.isclose(_lr_lambda("linear", 2, 10)(0), 0.5)


def test_prompt_completion_pairs_train_on_the_completion_only(loop):
    pair = ("Write a fact about Zorbian glass:\n", "It was invented in 1873.")
    [(ids, n_context)] = loop._encode([pair], 2048)
    _, _, labels = loop._batch([(ids, n_context)])
    prompt_len = len(loop.tokenizer(pair[0])["input_ids"])
    assert n_context == prompt_len
    assert (labels[0, :prompt_len] == -100).all() and (labels[0, prompt_len:] != -100).all()
    loop.reset(0)
    before = loop.loss_on([pair])
    stats = loop.train([pair], TrainConfig(epochs=5, learning_rate=1e-2))
    assert stats.tokens == 5 * (len(ids) - prompt_len)
    assert loop.loss_on([pair]) < before


def test_gradient_accumulation_steps_less_often(loop):
    loop.reset(0)
    stats = loop.train(TEXTS, TrainConfig(epochs=2, batch_size=1, grad_accum_steps=2))
    assert stats.steps == 4  # 3 batches per epoch -> steps after batch 2 and at the epoch's end
    loop.reset(0)
    # batch 2 with no accumulation vs batch 1 x 2: same number of optimizer steps per epoch
    assert loop.train(TEXTS, TrainConfig(epochs=2, batch_size=2)).steps == 4


def test_merged_adapter_generation_matches_and_restores_base_bits(loop):
    loop.reset(0)
    loop.train(TEXTS, TrainConfig(epochs=3, learning_rate=1e-2))
    before = base_weights(loop)
    prompts = ["Zorbian glass\\n", "Short"]
    plain = loop.generate(prompts, max_new_tokens=8, merge_adapter=False)
    merged = loop.generate(prompts, max_new_tokens=8, merge_adapter=True)
    assert merged == plain
    after = base_weights(loop)
    assert all(torch.equal(before[n], after[n]) for n in before)
    with loop.base_model():  # inside base_model() the adapter stays off, merged or not
        assert loop.generate(prompts, max_new_tokens=8, merge_adapter=True) == \
            loop.generate(prompts, max_new_tokens=8, merge_adapter=False)


def test_generation_mode_choice(monkeypatch):
    monkeypatch.delenv("SEALBENCH_GENERATION", raising=False)
    assert generation_mode("cpu") == "eager"            # compiling pays off only on a GPU
    assert generation_mode("cuda") in ("inductor", "cudagraphs")
    assert generation_mode("cuda", "eager") == "eager"
    monkeypatch.setenv("SEALBENCH_GENERATION", "eager")
    assert generation_mode("cuda") == "eager"
    with pytest.raises(ValueError, match="unknown generation mode"):
        generation_mode("cpu", "fast")
    # compiled batches come in few shapes: powers of two, at least 8, at most the batch size
    assert [_row_bucket(n, 16) for n in (1, 5, 8, 9, 16)] == [8, 8, 8, 16, 16]
    assert _row_bucket(3, 4) == 4 and _row_bucket(20, 16) == 20


def test_static_cache_generation_matches_eager(tiny):
    """The compiled path's batching (filler rows, static KV cache) changes no answer. On the CPU
    transformers declines to compile, so this checks everything but the CUDA graph itself
    (benchmarks/results/inner_loop_cuda_compiled_*.json compares the compiled answers on a GPU)."""
    loop = InnerLoop(tiny_random_model(seed=1, vocab_from=tiny), LoRAConfig(r=4, alpha=8), generation="eager")
    loop.reset(0)
    loop.train(TEXTS, TrainConfig(epochs=3, learning_rate=1e-2))
    before = base_weights(loop)
    prompts = ["Zorbian glass\\n", "Short", "Question: what is it?\nAnswer:"]
    eager = loop.generate(prompts, max_new_tokens=8, merge_adapter=True)
    loop.generation_mode = "inductor"
    static = loop.generate(prompts, max_new_tokens=8, merge_adapter=True)
    assert loop.generation_mode == "inductor"  # it ran, it did not fall back
    assert static == eager
    assert all(torch.equal(before[n], after) for n, after in base_weights(loop).items())


def test_compiled_generation_falls_back_to_eager(tiny, monkeypatch, caplog):
    loop = InnerLoop(tiny_random_model(seed=1, vocab_from=tiny), LoRAConfig(r=4, alpha=8), generation="cudagraphs")
    eager = InnerLoop(loop.loaded, LoRAConfig(r=4, alpha=8), generation="eager")

    def broken(*args, **kwargs):
        raise RuntimeError("no backend here")
    monkeypatch.setattr(inner_loop, "_static_cache_kwargs", broken)
    with caplog.at_level("WARNING"):
        answers = loop.generate(["Hi", "Short"], max_new_tokens=6)
    assert loop.generation_mode == "eager" and "falling back to eager" in caplog.text
    assert answers == eager.generate(["Hi", "Short"], max_new_tokens=6)
