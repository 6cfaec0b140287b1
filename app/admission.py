"""Admission control: a bounded amount of queued work per worker, and a fast 503 beyond it.

:class:`Bounded` wraps a :class:`~app.inference.Scorer` and counts the rows it holds (waiting or
being scored). A request whose rows would take the count past ``MAX_QUEUED_ROWS`` is refused at
once with :class:`~app.errors.Overloaded` (503 and ``Retry-After``) instead of waiting behind
work that already takes longer than a client should wait. Everything runs on the event loop, so
the count is a plain integer.
"""

from __future__ import annotations

from app.errors import Overloaded
from app.inference import Scorer
from app.model import Champion, Rows, Scores


class Bounded:
    def __init__(self, inner: Scorer, max_rows: int) -> None:
        self.inner = inner
        self.max_rows = max_rows
        self.rows = 0
        """Rows this worker holds now: queued or being scored."""

    async def score(self, model: Champion, rows: Rows) -> Scores:
        size = len(rows)
        if self.rows + size > self.max_rows:
            raise Overloaded()
        self.rows += size
        try:
            return await self.inner.score(model, rows)
        finally:
            self.rows -= size

    def close(self) -> None:
        self.inner.close()
