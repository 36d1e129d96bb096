"""The training loop: short, and ignorant of telescopes (they plug in as callbacks)."""

from telescope.train.loop import BeforeStep, Callback, batches, fit, make_optimizer, squared_loss
from telescope.train.recording import RecordAt, log_steps

__all__ = ["BeforeStep", "Callback", "RecordAt", "batches", "fit", "log_steps", "make_optimizer", "squared_loss"]
