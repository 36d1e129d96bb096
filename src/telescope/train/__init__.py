"""The training loop: short, and ignorant of telescopes (they plug in as callbacks)."""

from telescope.train.loop import Callback, batches, fit, make_optimizer, squared_loss

__all__ = ["Callback", "batches", "fit", "make_optimizer", "squared_loss"]
