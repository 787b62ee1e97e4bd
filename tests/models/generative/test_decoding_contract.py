"""Contract every generative model keeps: causality, cached decoding == full forward, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
from genmodel_helpers import DECODERS, LEVELS, Batch, make_batch, random_row, tiny_model
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from seqrec_pipeline.models.generative import GamerForCausalLM, load_model, shift_targets_right

ATOL = 1e-5  # different kernel blockings for different lengths; real leaks change logits by >1e-2


def _other_tokens(tokens: torch.Tensor, vocab, generator: torch.Generator) -> torch.Tensor:
    """Random non-special tokens, each guaranteed to differ from the one it replaces."""
    n_regular = vocab.size - 3
    shift = torch.randint(1, n_regular, tokens.shape, generator=generator)
    return (tokens - 3 + shift) % n_regular + 3


def _perturb_after(batch: Batch, t: int, vocab, generator: torch.Generator) -> Batch:
    """Copy of ``batch`` with every real token after position t (and its metadata) replaced at random."""
    changed = Batch(*(x.clone() for x in batch.__dict__.values()))
    future = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    future[:, t + 1 :] = batch.attention_mask[:, t + 1 :].bool()
    n = int(future.sum())
    new_behavior = torch.randint(len(vocab.behaviors), (n,), generator=generator)
    changed.input_ids[future] = _other_tokens(batch.input_ids[future], vocab, generator)
    changed.behavior[future] = new_behavior
    changed.level[future] = torch.tensor(LEVELS)[new_behavior]
    changed.slot[future] = torch.randint(vocab.block_size, (n,), generator=generator)
    return changed


@pytest.mark.parametrize("name", DECODERS)
def test_future_tokens_do_not_change_earlier_logits(name, vocab, generator):
    model = tiny_model(name, vocab)
    # Row 0 starts with two lowest-level (pv) blocks: tokens 0..7 have no lower-level key at all, so their
    # cross-level rows are fully masked (the rows the reference leaked through).  Row 1 is shorter (pads).
    rows = [random_row(vocab, 5, generator, behaviors=[0, 0, 3, 1, 3]), random_row(vocab, 3, generator)]
    batch = make_batch(rows, pad_side="right")
    with torch.no_grad():
        reference = model(**batch.inputs()).logits
        for t in (0, 2, 5, 9, 13):
            changed = model(**_perturb_after(batch, t, vocab, generator).inputs()).logits
            assert_close(changed[:, : t + 1], reference[:, : t + 1], atol=ATOL, rtol=0)
            # The perturbation is real: the next position of row 0 does see it.
            assert not torch.allclose(changed[0, t + 1 :], reference[0, t + 1 :], atol=1e-3)


def _decode_step_by_step(model, batch: Batch, prefill_length: int) -> torch.Tensor:
    out = model(**batch.slice(0, prefill_length).inputs(), use_cache=True)
    logits, cache = [out.logits], out.cache
    for t in range(prefill_length, batch.input_ids.shape[1]):
        step = batch.slice(t, t + 1)
        out = model(
            input_ids=step.input_ids,
            attention_mask=batch.attention_mask[:, : t + 1],  # cached + new tokens
            slot=step.slot,
            behavior=step.behavior,
            level=step.level,
            session=step.session,
            cache=cache,
            use_cache=True,
        )
        logits.append(out.logits)
        cache = out.cache
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("name", DECODERS)
def test_cached_decoding_of_left_padded_prompts_equals_full_forward(name, vocab, generator):
    model = tiny_model(name, vocab)
    # Histories of 1, 4 and 2 items then a target block, left-padded as evaluation prompts are.
    batch = make_batch([random_row(vocab, n, generator) for n in (2, 5, 3)], pad_side="left")
    with torch.no_grad():
        full = model(**batch.inputs()).logits
        # Prefill ends with the target's behavior token; the codes are then fed one at a time.
        stepped = _decode_step_by_step(model, batch, prefill_length=batch.input_ids.shape[1] - vocab.n_levels)
    assert_close(stepped, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", DECODERS)
def test_left_padding_does_not_change_logits(name, vocab, generator):
    model = tiny_model(name, vocab)
    rows = [random_row(vocab, 2, generator), random_row(vocab, 4, generator)]
    padded = make_batch(rows, pad_side="left")
    alone = make_batch(rows[:1])
    with torch.no_grad():
        n = alone.input_ids.shape[1]
        assert_close(model(**padded.inputs()).logits[0, -n:], model(**alone.inputs()).logits[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", DECODERS)
def test_beam_expansion_and_reordering_of_the_cache(name, vocab, generator):
    """The recipe a beam search follows: prefill once, repeat_interleave to beams, step, reorder, step."""
    model = tiny_model(name, vocab)
    n_beams, target_behavior = 3, 3
    target_meta = {"behavior": target_behavior, "level": LEVELS[target_behavior]}
    prompts = []
    for n, b in ((3, 0), (2, 1)):  # history + the target behavior token
        row = random_row(vocab, n, generator, behaviors=[b] * n)
        for key, value in (("input_ids", vocab.behavior_token(target_behavior)), ("slot", 0),
                           ("behavior", target_behavior), ("level", LEVELS[target_behavior]), ("labels", -100),
                           ("session", row["session"][-1] + 1)):  # the target opens a new session
            row[key].append(value)  # fmt: skip
        prompts.append(row)
    prompt = make_batch(prompts, pad_side="left")
    batch_size = prompt.input_ids.shape[0]
    # Distinct first codes per beam, so that a missing reorder would be noticed.
    c0 = torch.stack([torch.randperm(vocab.level_sizes[0], generator=generator)[:n_beams] for _ in range(batch_size)])
    c0 = c0 + vocab.level_offsets[0]
    c1 = torch.randint(vocab.level_sizes[1], (batch_size, n_beams), generator=generator) + vocab.level_offsets[1]
    keep = torch.tensor([[2, 2, 0], [1, 0, 1]])  # surviving beams after the first step, per prompt

    with torch.no_grad():
        out = model(**prompt.inputs(), use_cache=True, logits_to_keep=1)
        assert out.logits.shape[1] == 1
        cache = out.cache
        cache.batch_repeat_interleave(n_beams)  # every layer, incl. gamer's cross-level K/V and levels
        names = ("input_ids", "attention_mask", "slot", "behavior", "level", "session")
        seqs = {k: getattr(prompt, k).repeat_interleave(n_beams, 0) for k in names}
        target_session = seqs["session"][:, -1:]  # the session of the target's behavior token

        def step(tokens: torch.Tensor, slot_id: int) -> torch.Tensor:
            new = {"input_ids": tokens.reshape(-1, 1), "attention_mask": torch.ones_like(tokens.reshape(-1, 1)),
                   "slot": torch.full_like(tokens.reshape(-1, 1), slot_id), "session": target_session,
                   **{k: torch.full_like(tokens.reshape(-1, 1), v) for k, v in target_meta.items()}}  # fmt: skip
            for key, value in new.items():
                seqs[key] = torch.cat([seqs[key], value], dim=1)
            new_meta = {k: new[k] for k in ("slot", "behavior", "level", "session")}
            logits = model(input_ids=new["input_ids"], attention_mask=seqs["attention_mask"], cache=cache,
                           use_cache=True, **new_meta).logits[:, -1]  # fmt: skip
            oracle = model(**seqs).logits[:, -1]  # full forward of the same sequences
            assert_close(logits, oracle, atol=ATOL, rtol=0)
            return logits

        step(c0, slot_id=1)
        beam_idx = (keep + torch.arange(batch_size)[:, None] * n_beams).reshape(-1)
        cache.reorder_cache(beam_idx)
        for key in seqs:
            seqs[key] = seqs[key][beam_idx]
        target_session = target_session[beam_idx]
        step(c1, slot_id=2)


def test_tiger_cached_decoding_equals_full_forward(vocab, generator):
    model = tiny_model("tiger", vocab)
    history = make_batch([random_row(vocab, n, generator) for n in (2, 4, 1)], pad_side="left")
    target = make_batch([random_row(vocab, 1, generator) for _ in range(3)])
    target_ids = torch.cat([target.input_ids, torch.full((3, 1), 2)], dim=1)  # + eos
    decoder_input_ids = shift_targets_right(target_ids)  # [bos, behavior, c_0, .., c_{L-1}]
    n_beams = 2
    with torch.no_grad():
        full = model(**history.inputs(), decoder_input_ids=decoder_input_ids).logits
        encoder_outputs = model.get_encoder()(input_ids=history.input_ids, attention_mask=history.attention_mask)
        # Fixed-behavior prompt: [bos, behavior]; then the codes one at a time, on 2 identical beams per row.
        out = model(encoder_outputs=encoder_outputs, attention_mask=history.attention_mask,
                    decoder_input_ids=decoder_input_ids[:, :2], use_cache=True)  # fmt: skip
        logits, cache = [out.logits.repeat_interleave(n_beams, 0)], out.cache
        cache.batch_repeat_interleave(n_beams)
        encoder_outputs.last_hidden_state = encoder_outputs.last_hidden_state.repeat_interleave(n_beams, 0)
        encoder_mask = history.attention_mask.repeat_interleave(n_beams, 0)
        for t in range(2, decoder_input_ids.shape[1]):
            out = model(encoder_outputs=encoder_outputs, attention_mask=encoder_mask,
                        decoder_input_ids=decoder_input_ids[:, t : t + 1].repeat_interleave(n_beams, 0),
                        cache=cache, use_cache=True)  # fmt: skip
            logits.append(out.logits)
            cache = out.cache
    assert_close(torch.cat(logits, 1), full.repeat_interleave(n_beams, 0), atol=ATOL, rtol=0)


def test_tiger_decoder_is_causal(vocab, generator):
    model = tiny_model("tiger", vocab)
    history = make_batch([random_row(vocab, 3, generator)])
    decoder_input_ids = shift_targets_right(make_batch([random_row(vocab, 2, generator)]).input_ids)
    with torch.no_grad():
        reference = model(**history.inputs(), decoder_input_ids=decoder_input_ids).logits
        for t in (0, 3, 5):
            changed = decoder_input_ids.clone()
            changed[:, t + 1 :] = _other_tokens(changed[:, t + 1 :], vocab, generator)
            logits = model(**history.inputs(), decoder_input_ids=changed).logits
            assert_close(logits[:, : t + 1], reference[:, : t + 1], atol=ATOL, rtol=0)
            assert not torch.allclose(logits[:, t + 1 :], reference[:, t + 1 :], atol=1e-3)


@pytest.mark.parametrize("name", ["tiger", *DECODERS])
def test_save_pretrained_round_trip(name, vocab, generator, tmp_path):
    model = tiny_model(name, vocab)
    batch = make_batch([random_row(vocab, 3, generator), random_row(vocab, 2, generator)])
    extra = {"decoder_input_ids": shift_targets_right(batch.input_ids[:, :5])} if name == "tiger" else {}
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    auto = (AutoModelForSeq2SeqLM if name == "tiger" else AutoModelForCausalLM).from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and type(auto) is type(model)
    _, info = type(model).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched weights
    config_of = lambda m: {k: v for k, v in m.config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert config_of(loaded) == config_of(model)
    with torch.no_grad():
        expected = model(**batch.inputs(), **extra).logits
        assert_close(loaded(**batch.inputs(), **extra).logits, expected, atol=0, rtol=0)
        assert_close(auto(**batch.inputs(), **extra).logits, expected, atol=0, rtol=0)
    if name != "tiger":  # tied input/output embeddings survive the round trip
        assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()


def test_gamer_without_behavior_tokens(generator):
    """Single-behavior data: blocks are codes only, every slot is a code slot."""
    from seqrec_pipeline.vocab import TokenVocab

    vocab = TokenVocab(("item",), (5, 6), use_behavior_token=False)
    model = tiny_model("gamer", vocab)
    assert isinstance(model, GamerForCausalLM) and model.config.num_slots == 2
    batch = make_batch([random_row(vocab, 4, generator, behaviors=[0] * 4)], pad_side="left")
    batch.level.zero_()
    with torch.no_grad():
        full = model(**batch.inputs()).logits
        stepped = _decode_step_by_step(model, batch, prefill_length=6)
    assert_close(stepped, full, atol=ATOL, rtol=0)
