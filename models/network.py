"""The recurrent network: embedding (and character CNN) or real inputs -> RNN/LSTM/GRU -> a head.

`SequenceNet` is a plain `nn.Module` built from `Settings` and `DataInfo`. It can run a sequence
in one call (`forward`) or chunk by chunk with a carried state (`encode`), which is what truncated
back-propagation through time needs; both give the same outputs. The only cell-specific code is the
hidden state: an LSTM carries a pair `(h, c)`, the others one tensor; the `*_state` helpers below
treat both alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.char_cnn import CharCNN
from models.config import Settings
from models.data.base import DataInfo
from models.initialization import initialize

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
MANY_TO_ONE = ("classification", "regression")

# (layers * directions, batch, hidden); an LSTM carries the pair (h, c)
State = Tensor | tuple[Tensor, Tensor]


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)  # type: ignore[return-value]


def detach_state(state: State | None) -> State | None:
    return None if state is None else map_state(Tensor.detach, state)


def select_state(state: State, rows: Tensor) -> State:
    """The state of the sequences `rows` (indices into the batch)."""
    return map_state(lambda s: s.index_select(1, rows), state)


def scatter_state(state: State, rows: Tensor, new: State) -> State:
    """`state` with the sequences `rows` replaced by `new` (out of place, so autograd is happy)."""
    if isinstance(state, tuple):
        return tuple(s.index_copy(1, rows, n) for s, n in zip(state, new, strict=True))  # type: ignore[return-value]
    return state.index_copy(1, rows, new)  # type: ignore[arg-type]


def state_batch_size(state: State) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """(B, steps) True at real steps."""
    return torch.arange(steps, device=lengths.device) < lengths[:, None]


def _check(settings: Settings, info: DataInfo) -> None:
    """Settings this network cannot honour for this task: a ValueError saying why."""
    if settings.cell not in CELLS:
        raise ValueError(f"unknown cell {settings.cell!r}; valid cells: {', '.join(CELLS)}")
    if settings.bidirectional and info.task == "language_model":
        raise ValueError("bidirectional=True cannot predict the next token; use False")
    if settings.bidirectional and settings.truncation is not None:
        raise ValueError(
            f"bidirectional=True needs the whole sequence, so truncation must be None "
            f"(got {settings.truncation})"
        )
    if settings.pooling not in ("last", "mean", "max"):
        raise ValueError(f"unknown pooling {settings.pooling!r}; valid: last, mean, max")
    if settings.char_features and info.chars is None:
        raise ValueError(
            f"char_features=True needs each token's characters, which only tagged token files "
            f"(task source `tagged`) provide; this {info.task} task has none: set it to False"
        )
    if (info.vocab_size is None) == (info.input_size is None):
        raise ValueError(
            f"exactly one of info.vocab_size ({info.vocab_size}) and info.input_size "
            f"({info.input_size}) must be set"
        )


def _recurrent_layer(settings: Settings, input_size: int) -> nn.RNNBase:
    """`settings.cell` as a batch-first torch layer."""
    kwargs: dict = dict(
        input_size=input_size,
        hidden_size=settings.hidden_size,
        num_layers=settings.num_layers,
        batch_first=True,
        bidirectional=settings.bidirectional,
    )
    if settings.num_layers > 1:  # torch warns about dropout with a single layer
        kwargs["dropout"] = settings.dropout
    if settings.cell == "rnn":
        kwargs["nonlinearity"] = settings.nonlinearity
    return CELLS[settings.cell](**kwargs)


class SequenceNet(nn.Module):
    """A recurrent network with the head of `info.task`.

    `encode` maps one chunk of inputs to per-step features, `pool` reduces features over time for
    the many-to-one tasks, `head` maps features to predictions (logits, or regression values).
    """

    def __init__(self, settings: Settings, info: DataInfo) -> None:
        super().__init__()
        _check(settings, info)
        self.task = info.task
        self.pooling = settings.pooling
        self.nonnegative = settings.nonnegative and info.task == "regression"
        self.directions = 2 if settings.bidirectional else 1
        self.layers = settings.num_layers
        self.hidden_size = settings.hidden_size

        # the order of construction fixes which random numbers each layer starts from: keep it
        self.embedding: nn.Embedding | None = None
        self.char_cnn: CharCNN | None = None
        self.spelled = info.chars is not None  # token ids arrive with their characters
        rnn_input = info.input_size
        if info.vocab_size is not None:
            self.embedding = nn.Embedding(info.vocab_size, settings.embedding_dim)
            rnn_input = settings.embedding_dim
        if settings.char_features:
            self.char_cnn = CharCNN(len(info.chars), settings.char_dim, settings.char_hidden)  # type: ignore[arg-type]
            rnn_input = settings.embedding_dim + settings.char_hidden
        self.input_dropout = nn.Dropout(settings.input_dropout)
        self.rnn = _recurrent_layer(settings, rnn_input)  # type: ignore[arg-type]
        features = settings.hidden_size * self.directions
        self.layer_norm = settings.layer_norm
        self.norm = nn.LayerNorm(features) if settings.layer_norm else nn.Identity()
        self.output_dropout = nn.Dropout(settings.output_dropout)
        self.decoder = nn.Linear(features, info.output_size)
        initialize(self, settings)  # last: `uniform` draws every parameter built above

    # --- state ---
    def init_state(self, batch_size: int, like: Tensor) -> State:
        """Zeros on the device and dtype of `like`."""
        shape = (self.layers * self.directions, batch_size, self.hidden_size)
        h = like.new_zeros(shape)
        return (h, torch.zeros_like(h)) if isinstance(self.rnn, nn.LSTM) else h

    # --- the pieces ---
    def embed(self, inputs: Tensor) -> Tensor:
        """(B, T) token ids, (B, T, 1 + W) token ids with their characters, or (B, T, F) values
        -> (B, T, E), the recurrent layer's input."""
        if self.embedding is None:
            x = inputs if inputs.dtype == torch.float32 else inputs.float()
            return _dropped(self.input_dropout, x)
        words = inputs[..., 0] if self.spelled else inputs  # (B, T)
        x = self.embedding(words)  # (B, T, embedding_dim)
        if self.char_cnn is not None:
            x = torch.cat([x, self.char_cnn(inputs[..., 1:])], -1)  # (B, T, E + char_hidden)
        return _dropped(self.input_dropout, x)

    def recur(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        """Run the recurrent layer over one chunk of embedded inputs `x` (B, T, E).

        `lengths` (B,) counts the real steps of each row in this chunk (0 allowed); a row's state
        stops at its last real step and stays frozen, and its padded steps give zero features that
        the losses mask out. Returns features (B, T, H * directions) and the new state.
        """
        batch, steps = x.shape[:2]
        if state is None:
            state = self.init_state(batch, x)
        lengths = None if lengths is None else lengths.cpu()  # packing wants them on the CPU
        if lengths is None or bool((lengths >= steps).all()):
            out, state = self.rnn(x, state)
        elif not bool(lengths.any()):  # every row has ended: nothing runs, nothing changes
            out = x.new_zeros(batch, steps, self.hidden_size * self.directions)
        else:
            rows = (lengths > 0).nonzero().squeeze(1)  # rows with steps left in this chunk
            packed = pack_padded_sequence(
                x[rows.to(x.device)], lengths[rows], batch_first=True, enforce_sorted=False
            )
            rows = rows.to(x.device)
            packed_out, new = self.rnn(packed, select_state(state, rows))
            active, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=steps)
            out = x.new_zeros(batch, steps, active.shape[-1]).index_copy(0, rows, active)
            state = scatter_state(state, rows, new)
        if self.layer_norm:
            out = self.norm(out)
        return _dropped(self.output_dropout, out), state

    def encode(
        self, inputs: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        """One chunk of raw inputs -> features (B, T, H * directions) and the new state."""
        return self.recur(self.embed(inputs), lengths, state)

    def pool(self, features: Tensor, mask: Tensor | None, last: Tensor | None) -> Tensor:
        """(B, T, H) features -> (B, H) over the real steps `mask` (B, T); `last` (B,) indexes
        each row's last real step (None under "last" pooling: every row ends at step T - 1). A
        bidirectional network's backward half is taken at step 0 under "last" pooling, where
        that direction ends."""
        pooled = pool_steps(features, mask, last, self.pooling)
        if self.directions == 2 and self.pooling == "last":
            pooled = torch.cat(
                [pooled[:, : self.hidden_size], features[:, 0, self.hidden_size :]], 1
            )
        return pooled

    def head(self, features: Tensor) -> Tensor:
        """Features (..., H) -> logits or regression values (..., output_size)."""
        y = self.decoder(features)
        return F.softplus(y) if self.nonnegative else y

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Predictions for whole sequences from a zero state: (B, output_size) for the
        many-to-one tasks, (B, T, output_size) for tagging and language modelling."""
        return whole_sequences(self, inputs, lengths)


def _dropped(dropout: nn.Dropout, x: Tensor) -> Tensor:
    """`dropout(x)`, without the module call where it does nothing (p = 0, or evaluating): a
    truncated-BPTT step calls it four times."""
    return dropout(x) if dropout.p > 0 and dropout.training else x


def whole_sequences(net: nn.Module, inputs: Tensor, lengths: Tensor | None) -> Tensor:
    """The training core's one path from inputs to predictions, for `SequenceNet` and
    `models.user_network.UserNet` alike: `encode` from a zero state, then `pool` over the real
    steps (many-to-one tasks) and `head`."""
    features, _ = net.encode(inputs, lengths)  # (B, T, F)
    if net.task not in MANY_TO_ONE:
        return net.head(features)
    batch, steps = features.shape[:2]
    if lengths is None:
        lengths = torch.full((batch,), steps, device=features.device)
    lengths = lengths.to(features.device)
    return net.head(net.pool(features, step_mask(lengths, steps), lengths - 1))


def pool_steps(features: Tensor, mask: Tensor | None, last: Tensor | None, pooling: str) -> Tensor:
    """(B, T, F) -> (B, F): the `mean` or `max` over the real steps `mask` (B, T), or the
    `last` real step, which `last` (B,) indexes (None: the final step of every row)."""
    if pooling == "mean":
        assert mask is not None, "mean pooling needs the mask of real steps"
        return (features * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if pooling == "max":
        assert mask is not None, "max pooling needs the mask of real steps"
        return features.masked_fill(~mask[..., None], float("-inf")).amax(1)
    if last is None:
        return features[:, -1]
    return features[torch.arange(features.shape[0], device=features.device), last]


def build_network(settings: Settings, info: DataInfo) -> nn.Module:
    """`SequenceNet`, or the user's network (`settings.network`) behind its adapter."""
    if settings.network is None:
        return SequenceNet(settings, info)
    from models.user_network import UserNet

    return UserNet(settings, info)
