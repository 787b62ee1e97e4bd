"""Tempered loss on code tokens only, and a few optimizer steps that make it fall."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from genmodel_helpers import DECODERS, make_batch, random_row, tiny_model
from torch.testing import assert_close

from seqrec_pipeline.models.generative import shift_targets_right, tempered_cross_entropy


def _manual_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float, shift: bool) -> torch.Tensor:
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != -100
    return F.cross_entropy(logits[keep] / temperature, labels[keep])


def test_tempered_cross_entropy_matches_a_manual_computation(generator):
    logits = torch.randn(2, 6, 11, generator=generator)
    labels = torch.randint(11, (2, 6), generator=generator)
    labels[0, 2] = labels[1, 4:] = -100
    for temperature in (1.0, 0.7, 2.5):
        for shift in (True, False):
            expected = _manual_loss(logits, labels, temperature, shift)
            assert_close(tempered_cross_entropy(logits, labels, temperature, shift), expected)
    # Temperature really scales the logits (a sharper softmax changes the loss).
    assert not torch.isclose(tempered_cross_entropy(logits, labels, 0.5), tempered_cross_entropy(logits, labels, 1.0))
    # Nothing to predict: zero, not NaN.
    assert tempered_cross_entropy(logits, torch.full_like(labels, -100), 0.7).item() == 0.0
    with pytest.raises(ValueError):
        tempered_cross_entropy(logits, labels, 0.0)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_model_loss_ignores_behavior_tokens_and_pads(name, temperature, vocab, generator):
    model = tiny_model(name, vocab, loss_temperature=temperature)
    batch = make_batch([random_row(vocab, 3, generator), random_row(vocab, 1, generator)])
    assert (batch.labels[batch.slot == 0] == -100).all()  # behavior tokens and pads carry -100
    with torch.no_grad():
        out = model(**batch.inputs(with_labels=True))
        assert_close(out.loss, _manual_loss(out.logits, batch.labels, temperature, shift=True))
        # Tokens whose label is -100 do not count: changing them in the labels only does not move the loss.
        labels = batch.labels.clone()
        labels[labels == -100] = 5
        assert not torch.isclose(model(**batch.inputs(), labels=labels).loss, out.loss)


def test_tiger_loss_and_decoder_inputs(vocab, generator):
    model = tiny_model("tiger", vocab, loss_temperature=0.7)
    history = make_batch([random_row(vocab, 3, generator), random_row(vocab, 2, generator)])
    target = make_batch([random_row(vocab, 1, generator) for _ in range(2)])
    eos = torch.full((2, 1), 2)
    target_ids = torch.cat([target.input_ids, eos], 1)
    labels = torch.cat([target.labels, eos], 1)  # behavior token masked
    decoder_input_ids = shift_targets_right(target_ids)
    assert decoder_input_ids[:, 0].eq(1).all() and torch.equal(decoder_input_ids[:, 1], target_ids[:, 0])
    with torch.no_grad():
        out = model(**history.inputs(), decoder_input_ids=decoder_input_ids, labels=labels)
    assert_close(out.loss, _manual_loss(out.logits, labels, 0.7, shift=False))
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model(**history.inputs(), labels=labels)


@pytest.mark.parametrize("name", ["tiger", "tiger_mb", "mbgen", *DECODERS])
def test_a_few_optimizer_steps_reduce_the_loss(name, vocab, generator):
    model = tiny_model(name, vocab).train()
    rows = [random_row(vocab, n, generator) for n in (4, 3, 5, 2)]
    if model.config.is_encoder_decoder:  # history -> last block
        history = make_batch([{k: v[: -vocab.block_size] for k, v in row.items()} for row in rows], "left")
        target = make_batch([{k: v[-vocab.block_size :] for k, v in row.items()} for row in rows])
        inputs = {**history.inputs(), "decoder_input_ids": shift_targets_right(target.input_ids),
                  "decoder_behavior": target.behavior, "labels": target.labels}  # fmt: skip
    else:
        inputs = make_batch(rows).inputs(with_labels=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
