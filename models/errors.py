"""Errors the training core raises for the caller to catch."""


class DataError(ValueError):
    """A data file or data setting is unusable; the message names the file, line or field."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: loss is {loss}; "
            "lower the learning rate or clip gradients (clip_norm)"
        )
        self.epoch, self.step, self.loss = epoch, step, loss
