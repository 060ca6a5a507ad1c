"""What the long stages print, by where their output goes.

Progress bars redraw a line with carriage returns and cursor-up escapes: on a terminal that is
a live display, in a log file it is garbage (``\\x1b[A`` fragments and hundreds of half lines).
So bars show only when stderr is a terminal; a log gets plain lines instead. Deprecation
notices that libraries raise about their own internals (transformers' FutureWarnings, which
the user can neither act on nor silence) are kept out of every sweep and evaluation.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator

#: Libraries whose FutureWarnings and DeprecationWarnings concern their own internals, not the user.
_QUIET_LIBRARIES = r"(transformers|peft|accelerate|torch)(\..*)?$"


def is_terminal() -> bool:
    """Whether stderr (where bars and notes go) is an interactive terminal."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def bars_enabled(requested: bool) -> bool:
    """Show live bars only when asked for and stderr is a terminal."""
    return bool(requested) and is_terminal()


@contextlib.contextmanager
def quiet_library_warnings() -> Iterator[None]:
    """Hide the libraries' notices about their own deprecated internals for the block."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=_QUIET_LIBRARIES)
        yield


@contextlib.contextmanager
def quiet_model_loading() -> Iterator[None]:
    """No deprecation notices and no per-file "Loading weights" bars from transformers for the block:
    the stage shows its own progress, and those bars are redraw noise in a log."""
    from transformers.utils import (
        logging as hf_logging,  # heavy; only stages that load models get here
    )

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with quiet_library_warnings():
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def log_line(message: str) -> None:
    """One plain progress line for logs (used where a terminal would show a bar)."""
    print(message, file=sys.stderr, flush=True)
