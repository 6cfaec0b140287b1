"""A client that hangs up after its body was read: heard from the server, without a task.

Once a request's body is read, nothing in the request asks the server for more, so a client that
closes its connection while its request is scored would go unnoticed and be logged with the status
of an answer nobody received. :class:`HangUp` keeps one ``receive`` pending instead (a future, no
task of its own): the server completes it with ``http.disconnect`` when the client goes away.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from app.asgi import Message, Receive

LISTEN_AFTER: Final = 0.025
"""Seconds after its body was read before a request listens for its client hanging up (a 1000-row
batch at 8 connections is answered in ~6-13 ms here: with 5 ms most of them paid for a listener,
~2-4 % of batch throughput)."""
MAX_ASKS: Final = 4
"""How many times a request asks (granian answers one or more empty ends of body first)."""
Task = asyncio.Task[Any]


class HangUps:
    """The requests of one worker whose body is read: listening for those not answered quickly.

    A request answered within ``LISTEN_AFTER`` seconds of its body (almost all of them) pays for
    no pending ``receive``: its answer left before anyone could notice the client going.
    """

    def __init__(self) -> None:
        self._read: dict[Task, tuple[float, Receive]] = {}
        self._listening: dict[Task, HangUp] = {}

    def __contains__(self, task: object) -> bool:
        return task in self._read or task in self._listening

    def __len__(self) -> int:
        return len(self._read) + len(self._listening)

    def read(self, task: Task, receive: Receive) -> None:
        """``task``'s request body is read: it may listen from now on."""
        self._read[task] = (time.perf_counter(), receive)

    def listen(self, read_before: float) -> None:
        """Start listening for the requests whose body was read before ``read_before``."""
        for task, (read, receive) in list(self._read.items()):
            if read <= read_before:
                del self._read[task]
                self._listening[task] = HangUp(receive)

    def stop(self, task: Task | None) -> bool:
        """Whether the client of ``task`` was heard going away; stops listening for it."""
        if task is None:
            return False
        self._read.pop(task, None)
        hang_up = self._listening.pop(task, None)
        return hang_up is not None and hang_up.heard()


class HangUp:
    """Listens, once a request's body is read, for the server's word that the client went away.

    One pending ``receive``: the server answers it with ``http.disconnect`` when the client
    closes the connection (granian may first answer empty ends of body: then it asks again, up to
    :data:`MAX_ASKS` times). :meth:`heard` is asked when the request ends and stops listening.
    """

    __slots__ = ("_asks", "_future", "_gone", "_over", "_receive")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._asks = MAX_ASKS
        self._gone = self._over = False
        self._future = self._ask()

    def _ask(self) -> asyncio.Future[Message]:
        self._asks -= 1
        future = asyncio.ensure_future(self._receive())
        future.add_done_callback(self._answered)
        return future

    def _answered(self, future: asyncio.Future[Message]) -> None:
        if _disconnect(future):
            self._gone = True
        elif not self._over and self._asks > 0 and not future.cancelled():
            self._future = self._ask()  # an empty end of body again: ask once more

    def heard(self) -> bool:
        """Whether the client went away before now; stops listening (asking again is safe)."""
        self._over = True
        if self._future.done():
            self._gone = self._gone or _disconnect(self._future)
        else:
            self._future.remove_done_callback(self._answered)
            self._future.cancel()
        return self._gone


def _disconnect(future: asyncio.Future[Message]) -> bool:
    if not future.done() or future.cancelled() or future.exception() is not None:
        return False
    return bool(future.result()["type"] == "http.disconnect")
