"""Datasets, found in a data directory, and the registry that names them.

The data directory is, in order: an explicit ``data_dir`` argument (``--data-dir``), the
``TELESCOPE_DATA`` environment variable, or ``~/.cache/telescope``. Missing files raise
:class:`telescope.errors.DataError` naming the files expected and how to get them;
nothing is downloaded unless a user asks (``telescope data download mnist``).
"""

from telescope.data.core import Split, data_dir
from telescope.data.digits import DigitClasses, balanced_indices, load_digit_classes
from telescope.data.images import binary_task, downsample, load_digits, load_mnist

__all__ = ["Split", "data_dir", "DigitClasses", "balanced_indices", "load_digit_classes", "binary_task", "downsample",
           "load_digits", "load_mnist"]
