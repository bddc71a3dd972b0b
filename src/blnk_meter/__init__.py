"""Meter OpenAI usage per customer and post it to the Blnk ledger.

The public API is the list in ``__all__``; every other name may change
without notice.
"""

from __future__ import annotations

from . import errors
from ._usage import ProviderCall, UnmeteredCall, Usage

__all__ = [
    "ProviderCall",
    "UnmeteredCall",
    "Usage",
    "errors",
]

__version__ = "0.1.0"
