"""How a network's parameters start (`Settings.init`), applied once the network is built.

    initialize(net, settings)

default     PyTorch's own initialisation, then every LSTM forget-gate bias at 1
uniform     every parameter, biases and norms included, from U[-init_scale, init_scale]: the
            recipe of Zaremba et al. 2014 (0.1 for their small PTB model); no gate is opened
orthogonal  as `default`, then each gate's recurrent matrix orthogonal (Saxe et al. 2014), so
            that repeated multiplication by it neither grows nor shrinks the state at first

Works on any module: the recurrent layers are found among its submodules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models.config import Settings


def open_forget_gates(lstm: nn.LSTM) -> None:
    """Forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015): at PyTorch's default
    init the gate sits near 0.5, and a gradient shrinks like 0.5^T, as in a vanilla RNN."""
    h = lstm.hidden_size
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_ih"):
                bias[h : 2 * h].fill_(1.0)  # gates are ordered input, forget, cell, output


def _default(net: nn.Module, settings: Settings) -> None:
    for module in net.modules():
        if isinstance(module, nn.LSTM):
            open_forget_gates(module)


def _uniform(net: nn.Module, settings: Settings) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-settings.init_scale, settings.init_scale)


def _orthogonal(net: nn.Module, settings: Settings) -> None:
    _default(net, settings)
    with torch.no_grad():
        for module in net.modules():
            if not isinstance(module, nn.RNNBase):
                continue
            for name, weight in module.named_parameters():
                if name.startswith("weight_hh"):  # (gates x H, H): one square block per gate
                    for gate in weight.split(module.hidden_size):
                        nn.init.orthogonal_(gate)


INITS: dict[str, Callable[[nn.Module, Settings], None]] = {
    "default": _default,
    "uniform": _uniform,
    "orthogonal": _orthogonal,
}


def initialize(net: nn.Module, settings: Settings) -> None:
    """Set `net`'s parameters as `settings.init` says (see the module docstring)."""
    if settings.init not in INITS:
        raise ValueError(f"unknown init {settings.init!r}; valid: {', '.join(INITS)}")
    INITS[settings.init](net, settings)
