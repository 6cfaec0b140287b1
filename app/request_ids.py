"""Request ids: the client's ``X-Request-ID`` when it is safe to log and echo, else a new one."""

from __future__ import annotations

import os
import re
from itertools import count
from typing import Any, Final

REQUEST_ID_HEADER: Final = b"x-request-id"
MAX_REQUEST_ID_CHARS: Final = 128
_VALID_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")


class RequestIds:
    """Makes request ids: a random per-process prefix and a counter (unique, and ~0.2 µs each)."""

    def __init__(self) -> None:
        self._restart()
        # An app built before granian forks (``churn-api serve``) gives every worker its own prefix.
        os.register_at_fork(after_in_child=self._restart)

    def _restart(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = count(1)

    def new(self) -> bytes:
        return b"%s-%x" % (self._prefix.encode(), next(self._counter))

    def pick(self, headers: list[tuple[bytes, bytes]] | Any) -> bytes:
        """The client's ``X-Request-ID`` if it is valid (1-128 safe characters), else a new id."""
        for name, value in headers:
            if name == REQUEST_ID_HEADER:
                if _VALID_REQUEST_ID.fullmatch(value):
                    return bytes(value)
                break
        return self.new()
