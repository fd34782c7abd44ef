"""The batched inner loop (sealbench/engine): K adapters trained together are K adapters trained
alone, finished edits stop changing, base weights never change, batched answers are per-row
answers, one bad edit fails alone, and the arithmetic equals PEFT + torch.optim.AdamW.
Tiny random model, fp32, CPU."""
from __future__ import annotations

import math

import pytest
import torch

from sealbench.config import LoRASettings, TrainSettings
from sealbench.engine.generate import GenRequest, generate, row_uniforms
from sealbench.engine.inner_loop import Engine
from sealbench.engine.lora import AdapterBank
from sealbench.engine.train import EditJob, QueueMeter, train_edits, train_queue

LORA = LoRASettings(r=4, alpha=8)
TEXTS = [
    ["Zorbian glass\nfact one is here", "Zorbian glass\nanother much longer fact about the glass and its panes",
     "Zorbian glass\nshort"],
    ["Quillon river\nsome text", "Quillon river\nmore text that is quite a bit longer than the other lines here"],
    ["X\none", "X\ntwo", "X\nthree", "X\nfour", "X\nfive"],
    ["Y\na single line only"],
]
SETTINGS = [  # each edit its own semantics: epochs, lr, batch size, accumulation, schedule, clipping
    TrainSettings(learning_rate=1e-3, epochs=2),
    TrainSettings(learning_rate=5e-4, epochs=2, batch_size=2),
    TrainSettings(learning_rate=1e-3, epochs=4, lr_schedule="cosine", warmup_steps=2, max_grad_norm=0.5),
    TrainSettings(learning_rate=2e-3, epochs=1, grad_accum_steps=2, weight_decay=0.01),
]


@pytest.fixture(autouse=True)
def one_thread():
    """With 2 threads a small matmul splits its reduction by shape, so a row's rounding depends on
    what else is in the batch; one thread makes the comparisons below a test of the algorithm."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bank(tiny):
    b = AdapterBank(tiny.model, 4, LORA)
    yield b
    b.remove()


def _jobs():
    return [EditJob(t, s, seed=100 + i) for i, (t, s) in enumerate(zip(TEXTS, SETTINGS))]


def _state(bank, slot):
    return {k: v.clone() for k, v in bank.slot_state(slot).items()}


def test_k_edits_together_equal_each_alone(tiny, bank):
    together = train_edits(bank, tiny.tokenizer, _jobs())
    states = [_state(bank, s) for s in range(4)]
    for i, job in enumerate(_jobs()):
        alone = train_edits(bank, tiny.tokenizer, [job])[0]
        mine = _state(bank, 0)
        for name in ("A", "B"):
            assert torch.allclose(states[i][name], mine[name], atol=1e-5, rtol=0), (i, name)
        assert together[i].steps == alone.steps > 0
        assert abs(together[i].first_loss - alone.first_loss) < 1e-5
        assert abs(together[i].last_loss - alone.last_loss) < 1e-5
        assert all(abs(a - b) < 1e-5 for a, b in zip(together[i].epoch_losses, alone.epoch_losses))
        assert states[i]["B"].abs().max() > 0  # it trained


def test_steps_follow_each_edits_own_schedule(tiny, bank):
    stats = train_edits(bank, tiny.tokenizer, _jobs())
    # 3 seqs x 2 epochs; ceil(2/2)=1 x 2; 5 x 4; ceil(ceil(1/1)/2)=1 x 1
    assert [s.steps for s in stats] == [6, 2, 20, 1]
    assert [s.n_sequences for s in stats] == [3, 2, 5, 1]
    assert [len(s.epoch_losses) for s in stats] == [2, 2, 4, 1]


def test_a_finished_edit_stops_changing(tiny, bank):
    snapshots = {}
    jobs = _jobs()
    short_micro_steps = 1  # edit 3: one sequence, one epoch

    def progress(done, total):
        snapshots[done] = _state(bank, 3)
    train_edits(bank, tiny.tokenizer, jobs, progress=progress)
    final = _state(bank, 3)
    after = [snapshots[t] for t in sorted(snapshots) if t >= short_micro_steps]
    assert len(after) > 5
    for snap in after:
        assert torch.equal(snap["A"], final["A"]) and torch.equal(snap["B"], final["B"])


def test_base_weights_are_bit_identical_after_a_batch(tiny, bank):
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()
              if not n.endswith((".A", ".B")) and "lora" not in n}
    train_edits(bank, tiny.tokenizer, _jobs())
    generate(tiny.model, tiny.tokenizer, [GenRequest("X\n", slot=0, max_new_tokens=3)], bank)
    after = dict(tiny.model.named_parameters())
    assert before and all(torch.equal(before[n], after[n]) for n in before)


def test_batched_answers_equal_answers_one_at_a_time(tiny, bank):
    train_edits(bank, tiny.tokenizer, _jobs())
    reqs = [GenRequest("Zorbian glass\nfact", slot=0, max_new_tokens=6),
            GenRequest("Quillon river\nsome", slot=1, max_new_tokens=6),
            GenRequest("X\n", slot=None, max_new_tokens=5),
            GenRequest("Zorbian glass\nanother", slot=0, max_new_tokens=4, temperature=1.0, top_p=0.9, seed=3),
            GenRequest("X\nt", slot=2, max_new_tokens=6, temperature=0.7, seed=11),
            GenRequest("Y\na", slot=3, max_new_tokens=3)]
    together = generate(tiny.model, tiny.tokenizer, reqs, bank)
    alone = [generate(tiny.model, tiny.tokenizer, [r], bank)[0] for r in reqs]
    assert together == alone
    assert together[2] == generate(tiny.model, tiny.tokenizer, [reqs[2]])[0]  # slot None = no bank at all


def test_static_cache_decoding_equals_transformers_generate(tiny, bank):
    """The static-cache decoder (the form CUDA graphs capture; here its CPU form) gives the tokens
    transformers' generate gives with the same sampling rule: greedy and sampled rows, adapter slots
    and base rows, left padding, per-row lengths, EOS and stop strings (the completion ends where
    the stop ends)."""
    from sealbench.engine import generate as gen

    train_edits(bank, tiny.tokenizer, _jobs())
    reqs = [GenRequest("Zorbian glass\nfact one is", slot=0, max_new_tokens=12),
            GenRequest("X\n", slot=None, max_new_tokens=20),
            GenRequest("Quillon river\nsome", slot=1, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=3),
            GenRequest("Y\na", slot=3, max_new_tokens=7, temperature=0.7, seed=11)]
    assert gen.static_decoding(tiny.model)
    mine = generate(tiny.model, tiny.tokenizer, reqs, bank, static=True)
    stopped = generate(tiny.model, tiny.tokenizer, reqs, bank, stop_strings=["e"], static=True)
    assert any(len(t) > 3 for t in mine) and any(t.endswith("e") for t in stopped)
    assert generate(tiny.model, tiny.tokenizer, reqs, bank, static=False) == mine
    assert generate(tiny.model, tiny.tokenizer, reqs, bank, stop_strings=["e"], static=False) == stopped
    assert generate(tiny.model, tiny.tokenizer, reqs, bank) == mine  # on a CPU the default is transformers'


def test_sampling_noise_depends_only_on_seed_and_step():
    a = row_uniforms(torch.tensor([5, 9]), 3, 50)
    b = row_uniforms(torch.tensor([9]), 3, 50)
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])
    assert 0 < float(a.min()) and float(a.max()) < 1
    assert not torch.equal(row_uniforms(torch.tensor([9]), 4, 50), b)


def test_a_nan_loss_fails_only_that_edit(tiny, bank):
    jobs = _jobs()
    bad = TrainSettings.model_construct(**{**SETTINGS[2].model_dump(), "learning_rate": 1e30})
    jobs[2] = EditJob(jobs[2].texts, bad, jobs[2].seed)
    stats = train_edits(bank, tiny.tokenizer, jobs)
    assert stats[2].error and "loss became" in stats[2].error
    assert [s.error for i, s in enumerate(stats) if i != 2] == [None, None, None]
    good = _state(bank, 0)
    alone = train_edits(bank, tiny.tokenizer, [_jobs()[0]])
    assert alone[0].error is None
    assert torch.allclose(good["B"], _state(bank, 0)["B"], atol=1e-5, rtol=0)


def test_an_edit_without_sequences_fails_alone(tiny, bank):
    jobs = _jobs()[:2] + [EditJob([], SETTINGS[0], 1)]
    stats = train_edits(bank, tiny.tokenizer, jobs)
    assert stats[2].error.startswith("nothing to train on") and stats[0].error is None


def test_the_optimizer_updates_scattered_slots_as_it_updates_each_alone():
    """BatchedAdamW gathers scattered slots (more than MAX_RUNS runs) in chunks; the numbers are
    those of updating each slot alone, and slots not asked for do not change at all."""
    from sealbench.engine.train import BatchedAdamW

    torch.manual_seed(0)
    flat = [(torch.randn(12, 30), torch.randn(12, 30)), (torch.randn(12, 7), torch.randn(12, 7))]
    copy = [(p.clone(), g.clone()) for p, g in flat]
    slots = [0, 2, 3, 5, 8, 9, 11]
    lr = [1e-3 * (i + 1) for i in range(len(slots))]
    wd = [0.0, 0.01, 0.0, 0.1, 0.0, 0.0, 0.02]
    norm = [0.5, float("inf"), 1.0, 0.1, float("inf"), 2.0, 0.3]
    gathered, alone = BatchedAdamW(flat), BatchedAdamW(copy)
    gathered.CHUNK = 3  # several chunks
    for _ in range(3):  # moments and step counts carry over between steps
        gathered.step(slots, lr, wd, norm)
        for i, s in enumerate(slots):
            alone.step([s], [lr[i]], [wd[i]], [norm[i]])
        for (p, g), (q, h) in zip(flat, copy):
            g.copy_(torch.randn_like(g))
            h.copy_(g)
    for (p, g), (q, h) in zip(flat, copy):
        assert torch.equal(p, q)
    assert torch.equal(gathered.t, alone.t) and gathered.t[1] == 0 and gathered.t[0] == 3
    for m1, m2 in zip(gathered.exp_avg + gathered.exp_avg_sq, alone.exp_avg + alone.exp_avg_sq):
        assert torch.equal(m1, m2) and not m1[1].any()


def test_one_adapter_equals_peft_with_torch_adamw(tiny):
    """K=1 of the engine is the textbook inner loop: PEFT LoRA (same init) + torch.optim.AdamW."""
    peft = pytest.importorskip("peft")
    import copy

    from sealbench.engine.train import encode, schedule

    job = EditJob(TEXTS[0], TrainSettings(learning_rate=1e-3, epochs=2, max_grad_norm=1.0), seed=7)
    bank = AdapterBank(tiny.model, 1, LORA)
    bank.reset(0, job.seed)
    init = _state(bank, 0)
    stats = train_edits(bank, tiny.tokenizer, [job])[0]
    ours = _state(bank, 0)
    bank.remove()
    model = peft.get_peft_model(copy.deepcopy(tiny.model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA.targets)))
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    bank2 = AdapterBank(copy.deepcopy(tiny.model), 1, LORA)  # only for the offsets of the flat layout
    with torch.no_grad():
        for i, layer in enumerate(layers):
            a0, a1 = bank2.a_offsets[i], bank2.a_offsets[i + 1]
            d_in, _ = bank2.shapes[i]
            layer.lora_A["default"].weight.copy_(init["A"][a0:a1].view(d_in, 4).T)
            layer.lora_B["default"].weight.zero_()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    seqs = encode(tiny.tokenizer, job.texts, 2048)
    losses = []
    for micro in schedule(len(seqs), job.settings, job.seed)[0]:
        ids, n_ctx = seqs[micro.indices[0]]
        x = torch.tensor([ids])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
    assert math.isclose(losses[0], stats.first_loss, abs_tol=1e-5)
    assert math.isclose(losses[-1], stats.last_loss, abs_tol=1e-5)
    for i, layer in enumerate(layers):
        b0, b1 = bank2.b_offsets[i], bank2.b_offsets[i + 1]
        _, d_out = bank2.shapes[i]
        theirs = layer.lora_B["default"].weight.detach().T.reshape(-1)
        assert torch.allclose(ours["B"][b0:b1], theirs, atol=1e-5), i
    bank2.remove()


def test_history_folding_equals_merging_into_the_weights(tiny):
    """Continual: a slot's folded history computes what merging its adapter into W computes."""
    import copy

    merged = copy.deepcopy(tiny)
    engine = Engine(tiny, LORA, n_slots=2)
    engine.train([EditJob(TEXTS[1], SETTINGS[0], 1), EditJob(TEXTS[2], SETTINGS[0], 2)])
    state = engine.bank.slot_state(1)
    engine.bank.fold_into_history()
    prompt = [GenRequest("X\nt", slot=1, max_new_tokens=6)]
    folded = engine.generate(prompt)
    engine.close()
    other = AdapterBank(merged.model, 1, LORA)
    other.load_slot_state(0, state)
    other.merge_into_base(0)
    other.remove()
    assert folded == generate(merged.model, merged.tokenizer, [GenRequest("X\nt", max_new_tokens=6)])


def test_engine_rejects_more_edits_than_slots(tiny):
    with Engine(tiny, LORA, n_slots=2) as engine:
        with pytest.raises(ValueError, match="do not fit 2 adapter slots"):
            engine.train([EditJob(t, SETTINGS[0], 0) for t in TEXTS[:3]])


def test_a_bf16_model_trains_each_edit_as_alone_through_its_gathered_compute_copy():
    """A bf16 model computes with a bf16 copy of the fp32 adapters (engine/lora.py); a training pass
    gathers only its own slots into it. Edits trained together in every slot (the whole bank copied)
    equal each trained alone in a slot of the bank (that slot gathered), and the masters stay fp32."""
    from sealbench.engine.models import tiny_random_model

    model = tiny_random_model(seed=0, num_hidden_layers=2)
    model.model.to(torch.bfloat16)
    jobs = _jobs()
    bank = AdapterBank(model.model, 4, LORA)
    assert bank.copy.a.dtype == torch.bfloat16 and bank.A.dtype == torch.float32
    together = train_edits(bank, model.tokenizer, jobs)
    states = [_state(bank, s) for s in range(4)]
    for j, job in enumerate(jobs):
        alone = train_edits(bank, model.tokenizer, [job], slots=[3 - j])[0]
        mine = _state(bank, 3 - j)
        assert alone.error is None and alone.last_loss == pytest.approx(together[j].last_loss, rel=1e-2)
        for key in ("A", "B"):
            assert torch.allclose(mine[key], states[j][key], atol=2e-3, rtol=2e-2)
        assert mine["B"].abs().max() > 0
    bank.remove()


# ----------------------------------------------------------------- continuous batching (train_queue)
def _queue_jobs():
    """Six edits of very different lengths (1 to 20 micro-batches), more than the bank's slots."""
    jobs = _jobs()
    jobs += [EditJob(TEXTS[1], SETTINGS[0], seed=200), EditJob(TEXTS[3], SETTINGS[2], seed=201)]
    return jobs


@pytest.mark.parametrize("longest_first", [True, False])
def test_an_edit_in_a_reused_slot_equals_it_trained_alone(tiny, longest_first):
    bank = AdapterBank(tiny.model, 2, LORA)
    try:
        jobs = _queue_jobs()
        seen, trained = {}, {}
        for finished in train_queue(bank, tiny.tokenizer, jobs, flush_at=1, longest_first=longest_first):
            for j, slot, st in finished:
                seen.setdefault(slot, []).append(j)
                trained[j] = (_state(bank, slot), st)
        assert sorted(trained) == list(range(len(jobs)))
        # a slot was reused several times; in plain order a slot held a shorter edit before a longer one
        assert max(len(js) for js in seen.values()) >= 3
        micro = {j: len(train_queue_plan(tiny, jobs[j])) for j in range(len(jobs))}
        successions = [(micro[a], micro[b]) for js in seen.values() for a, b in zip(js, js[1:])]
        assert any(a > b for a, b in successions)
        assert longest_first or any(a < b for a, b in successions)
        for j, job in enumerate(jobs):
            alone = train_edits(bank, tiny.tokenizer, [job])[0]
            state, st = trained[j]
            for name in ("A", "B"):
                assert torch.allclose(state[name], _state(bank, 0)[name], atol=1e-5, rtol=0), (j, name)
            assert st.steps == alone.steps > 0 and st.error is None
            assert abs(st.first_loss - alone.first_loss) < 1e-5 and abs(st.last_loss - alone.last_loss) < 1e-5
            assert all(abs(a - b) < 1e-5 for a, b in zip(st.epoch_losses, alone.epoch_losses))
    finally:
        bank.remove()


def train_queue_plan(tiny, job):
    from sealbench.engine.train import encode, schedule

    return schedule(len(encode(tiny.tokenizer, job.texts, job.settings.max_length)), job.settings, job.seed)[0]


def test_the_queue_starts_the_longest_edits_first_and_keeps_slots_busy(tiny):
    bank = AdapterBank(tiny.model, 2, LORA)
    try:
        meter = QueueMeter()
        order = []
        for finished in train_queue(bank, tiny.tokenizer, _queue_jobs(), flush_at=1, meter=meter):
            order += [j for j, _, _ in finished]
        lengths = [len(train_queue_plan(tiny, job)) for job in _queue_jobs()]
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        assert order[-1] == longest  # it started first and ran longest: it finishes last
        # slot reuse: the global steps are those of the longest edit plus at most the others' total
        # packed in beside it, never the lockstep sum of batches
        assert meter.steps <= max(lengths) + 1 and meter.occupancy > 0.5
        assert meter.live_slot_steps == sum(lengths)
    finally:
        bank.remove()


def test_a_reset_slot_keeps_no_adapter_or_optimizer_state(tiny, bank):
    from sealbench.engine.train import BatchedAdamW

    train_edits(bank, tiny.tokenizer, _jobs())
    optimizer = BatchedAdamW(bank.flat)
    for m in optimizer.exp_avg + optimizer.exp_avg_sq:
        m.fill_(1.0)
    optimizer.t.fill_(7)
    bank.A_grad.fill_(1.0)
    other = _state(bank, 2)
    bank.reset(1, seed=5)
    optimizer.reset(1)
    assert all(float(m[1].abs().max()) == 0 for m in optimizer.exp_avg + optimizer.exp_avg_sq)
    assert float(optimizer.t[1]) == 0 and float(bank.A_grad[1].abs().max()) == 0
    assert float(optimizer.t[2]) == 7 and float(bank.A_grad[2].abs().min()) == 1  # others untouched
    assert float(bank.B[1].abs().max()) == 0
    assert torch.equal(_state(bank, 2)["A"], other["A"])
    bank.reset(3, seed=5)
    assert torch.equal(bank.A[1], bank.A[3])  # the init depends on the seed alone


def test_time_per_edit_is_attributed_by_its_passes(tiny):
    bank = AdapterBank(tiny.model, 4, LORA)
    try:
        meter = QueueMeter()
        stats = {}
        for finished in train_queue(bank, tiny.tokenizer, _queue_jobs(), flush_at=2, meter=meter):
            stats.update({j: st for j, _, st in finished})
        total = sum(st.seconds for st in stats.values())
        assert abs(total - meter.seconds) < 1e-6 * max(1.0, meter.seconds)
        lengths = [len(train_queue_plan(tiny, job)) for job in _queue_jobs()]
        longest, shortest = max(range(6), key=lengths.__getitem__), min(range(6), key=lengths.__getitem__)
        assert stats[longest].seconds > stats[shortest].seconds
        assert stats[longest].passes >= lengths[longest] and stats[shortest].slot_seconds > 0
    finally:
        bank.remove()


def test_the_static_pass_equals_the_eager_pass(tiny):
    """The static-shape form of a pass (CUDA-graphed on a GPU; here its CPU form) trains every edit
    as the eager pass does, fillers and padding included."""
    bank = AdapterBank(tiny.model, 6, LORA)
    try:
        jobs = _queue_jobs()
        results = {}
        for static in (False, True):
            meter, states = QueueMeter(), {}
            for finished in train_queue(bank, tiny.tokenizer, jobs, static=static, meter=meter):
                states.update({j: (_state(bank, slot), st) for j, slot, st in finished})
            results[static] = states
            assert (meter.static_passes == meter.passes) if static else meter.static_passes == 0
        for j in range(len(jobs)):
            (eager, e), (fixed, f) = results[False][j], results[True][j]
            for name in ("A", "B"):
                assert torch.allclose(eager[name], fixed[name], atol=1e-5, rtol=0), (j, name)
            assert e.steps == f.steps and abs(e.last_loss - f.last_loss) < 1e-5
    finally:
        bank.remove()


def test_answers_of_a_queued_episode_equal_its_answers_alone(tiny):
    """Episodes through a queue of 2 slots (reused as episodes finish, answered in groups) give the
    same answers, grades and training as each episode run alone."""
    from sealbench.engine.inner_loop import Engine
    from sealbench.families.squad.data import Passage, Question
    from sealbench.families.squad.episode import AnswerSettings, Episode, run_episodes
    from sealbench.grading import get_grader

    passages = [Passage(f"p:{i}", f"Place {i}", f"Place {i} was founded in {1800 + 7 * i} by the mayor.",
                        [Question(f"When was Place {i} founded?", [str(1800 + 7 * i)])]) for i in range(5)]
    episodes = [Episode(f"e{i}", [p], [f"{p.title}\n{p.context}"] * (1 + 2 * i), seed=300 + i)
                for i, p in enumerate(passages)]
    episodes.append(Episode("base", passages[:1], None, seed=1))  # answered without training
    train, answer = TrainSettings(learning_rate=1e-3, epochs=2), AnswerSettings(max_tokens=5)
    with Engine(tiny, LORA, n_slots=2) as engine:
        together = run_episodes(engine, episodes, train, answer, get_grader("match"))
        alone = [run_episodes(engine, [e], train, answer, get_grader("match"))[0] for e in episodes]
    assert engine.meter.passes > 0
    for a, b in zip(together, alone):
        assert a["status"] == b["status"] == "ok"
        assert [q["raw"] for q in a["questions"]] == [q["raw"] for q in b["questions"]]
        assert [q["correct"] for q in a["questions"]] == [q["correct"] for q in b["questions"]]
        if a["train"]:
            assert abs(a["train"]["last_loss"] - b["train"]["last_loss"]) < 1e-5


def test_a_pass_that_runs_out_of_memory_is_run_again_in_parts(tiny, monkeypatch):
    """The memory plan is an estimate: a pass that runs out of device memory (here: raised by hand
    after it has left partial gradients in the compute copy, as a backward cut short would) lowers
    the plan and runs again in smaller passes, and every edit trains as it would have."""
    import sealbench.engine.train as train_module

    bank = AdapterBank(tiny.model, 6, LORA)
    try:
        jobs = _queue_jobs()
        results, real = {}, train_module._forward_backward
        for fail in (False, True):
            bank.static_tokens = bank.eager_tokens = None
            failures = []

            def flaky(b, members, pad):
                if fail and len(members) >= 2 and len(failures) < 3:
                    failures.append(len(members))
                    b.copy.a_grad.add_(1.0)  # half a backward's worth of gradient
                    raise torch.OutOfMemoryError("CUDA out of memory (test)")
                return real(b, members, pad)

            monkeypatch.setattr(train_module, "_forward_backward", flaky)
            meter, states = QueueMeter(), {}
            for finished in train_queue(bank, tiny.tokenizer, jobs, static=False, meter=meter):
                states.update({j: (_state(bank, slot), st) for j, slot, st in finished})
            results[fail] = states
            assert meter.memory_splits == len(failures) == (3 if fail else 0)
        assert bank.eager_tokens < 1 << 62  # the plan was lowered
        for j in range(len(jobs)):
            (clean, c), (split, s) = results[False][j], results[True][j]
            for name in ("A", "B"):
                assert torch.allclose(clean[name], split[name], atol=1e-5, rtol=0), (j, name)
            assert c.steps == s.steps and abs(c.last_loss - s.last_loss) < 1e-5
    finally:
        bank.remove()


def test_passes_are_split_under_the_memory_plan():
    """Every pass the planner makes stays within `max_tokens` when the groups allow it, however far
    over it the step is (a K=256 step of teacher notes is ~50k padded tokens; earlier a split whose
    parts were all over the cap scored worse than none, and the step ran whole)."""
    from sealbench.engine.train import buckets

    widths = [100 + (7 * g) % 200 for g in range(256)]
    for cap in (150, 4096, 8192):
        needed = -(-sum(widths) // cap)
        parts = buckets(widths, 1, 2048, max_buckets=max(4, 2 * needed), max_tokens=cap)
        assert sorted(g for p in parts for g in p) == list(range(256))
        assert all(len(p) * max(widths[g] for g in p) <= cap for p in parts if len(p) > 1), cap
    assert len(buckets([100] * 4, 1, 0, max_buckets=4, max_tokens=150)) == 4
