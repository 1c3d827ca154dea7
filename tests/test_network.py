"""SequenceNet: chunked evaluation with a carried state, heads, settings checks."""

import warnings

import pytest
import torch

from models.config import Settings
from models.data.base import DataInfo
from models.network import SequenceNet, detach_state


def _info(task="tagging", input_size=3, vocab_size=None, output_size=4):
    return DataInfo(task, input_size, vocab_size, output_size, max_len=10, n_train=8)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("variable", [False, True], ids=["fixed", "variable"])
def test_chunked_encode_with_carried_state_equals_one_pass(cell, variable):
    torch.manual_seed(0)
    net = SequenceNet(Settings(cell=cell, hidden_size=8, num_layers=2), _info()).eval()
    x = torch.randn(4, 10, 3)  # (B, T, F)
    lengths = torch.tensor([10, 7, 3, 1]) if variable else None
    whole, whole_state = net.encode(x, lengths)

    pieces, state = [], None
    for t0 in range(0, 10, 3):  # chunks of 3, 3, 3, 1 steps; short rows run out mid-way
        chunk_lengths = None if lengths is None else (lengths - t0).clamp(0, 3)
        out, state = net.encode(x[:, t0 : t0 + 3], chunk_lengths, state)
        pieces.append(out)
        state = detach_state(state)
    chunked = torch.cat(pieces, 1)  # (B, T, H)

    real = torch.ones(4, 10, dtype=torch.bool)
    if lengths is not None:
        real = torch.arange(10) < lengths[:, None]
    torch.testing.assert_close(chunked[real], whole[real])
    for a, b in zip(*(s if isinstance(s, tuple) else (s,) for s in (state, whole_state)), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)


def test_state_of_an_ended_sequence_stays_frozen():
    torch.manual_seed(0)
    net = SequenceNet(Settings(cell="gru", hidden_size=8), _info()).eval()
    x = torch.randn(2, 6, 3)
    _, state = net.encode(x, torch.tensor([6, 2]))
    _, short = net.encode(x[1:, :2])  # the second row alone, its 2 real steps
    torch.testing.assert_close(state[:, 1], short[:, 0])


def test_bad_cell_names_the_valid_ones():
    with pytest.raises(ValueError, match="rnn, lstm, gru"):
        SequenceNet(Settings(cell="transformer"), _info())  # type: ignore[arg-type]


def test_dropout_with_one_layer_gives_no_warning_and_reaches_torch_with_two():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = SequenceNet(Settings(dropout=0.5, num_layers=1), _info())
    two = SequenceNet(Settings(dropout=0.5, num_layers=2), _info())
    assert one.rnn.dropout == 0.0
    assert two.rnn.dropout == 0.5


def test_bidirectional_refused_for_language_models_and_truncation():
    lm = DataInfo("language_model", None, 20, 20, max_len=10, n_train=100)
    with pytest.raises(ValueError, match="bidirectional"):
        SequenceNet(Settings(bidirectional=True), lm)
    with pytest.raises(ValueError, match="truncation"):
        SequenceNet(Settings(bidirectional=True, truncation=5), _info())


def test_nonlinearity_reaches_the_vanilla_rnn():
    net = SequenceNet(Settings(cell="rnn", nonlinearity="relu"), _info())
    assert net.rnn.nonlinearity == "relu"


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_many_to_one_heads_ignore_padded_steps(pooling):
    torch.manual_seed(0)
    settings = Settings(hidden_size=8, pooling=pooling, bidirectional=True, layer_norm=True)
    net = SequenceNet(settings, _info("classification", output_size=3)).eval()
    x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 4, 2])
    garbage = torch.cat([x, 100 * torch.randn(3, 4, 3)], 1)  # 4 more padded steps
    garbage[1, 4:], garbage[2, 2:] = 100.0, -100.0  # and noise inside the padding
    logits = net(x, lengths)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(net(garbage, lengths), logits)


def test_heads_by_task():
    torch.manual_seed(0)
    tokens = torch.randint(0, 20, (2, 7))  # (B, T) token ids
    tagger = SequenceNet(Settings(hidden_size=8), _info("tagging", None, 20, 5))
    assert tagger(tokens).shape == (2, 7, 5)
    lm = SequenceNet(Settings(hidden_size=8), DataInfo("language_model", None, 20, 20, 7, 100))
    assert lm(tokens).shape == (2, 7, 20)
    regressor = SequenceNet(Settings(hidden_size=8, nonnegative=True), _info("regression", 3, None, 2))  # fmt: skip
    with torch.no_grad():
        regressor.decoder.bias.fill_(-50.0)  # a linear head would go negative here
    values = regressor(torch.randn(2, 7, 3))
    assert values.shape == (2, 2)
    assert (values >= 0).all()
