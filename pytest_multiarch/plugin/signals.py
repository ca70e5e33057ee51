"""SIGTERM — what CI systems send a cancelled job — handled like Ctrl-C.

Python's default for SIGTERM ends the process at once: no ``finally``, no fixture teardown, no
runner clean-up, so every container of the run stays behind until the next session reaps it.
Raising :class:`KeyboardInterrupt` instead lets pytest tear down as for Ctrl-C and exit non-zero
(2, "interrupted").
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

_previous: Any = None
_installed = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}: the job was cancelled")


def install() -> None:
    """Turn SIGTERM into KeyboardInterrupt, unless someone else already handles SIGTERM."""
    global _previous, _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current not in (signal.SIG_DFL, None):
        return  # a handler of the user's (or another plugin's) wins
    _previous = signal.signal(signal.SIGTERM, _interrupt)
    _installed = True


def uninstall() -> None:
    """Put the previous SIGTERM handler back."""
    global _previous, _installed
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
    _previous, _installed = None, False
