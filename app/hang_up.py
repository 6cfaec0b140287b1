"""A client that hangs up after its body was read: heard from the server, without a task.

Once a request's body is read, nothing in the request asks the server for more, so a client that
closes its connection while its request is scored would go unnoticed and be logged with the status
of an answer nobody received. :class:`HangUp` keeps one ``receive`` pending instead (a future, no
task of its own): the server completes it with ``http.disconnect`` when the client goes away.
"""

from __future__ import annotations

import asyncio

from app.asgi import Message, Receive


class HangUp:
    """Listens, once a request's body is read, for the server's word that the client went away.

    One pending ``receive``: the server answers it with ``http.disconnect`` when the client
    closes the connection (granian first answers one more empty end of body, then a second
    ``receive`` waits). :meth:`heard` is asked when the request ends and stops listening.
    """

    __slots__ = ("_first", "_over", "_receive", "_second")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._over = False
        self._second: asyncio.Future[Message] | None = None
        self._first = asyncio.ensure_future(receive())
        self._first.add_done_callback(self._again)

    def _again(self, first: asyncio.Future[Message]) -> None:
        if not self._over and not _disconnect(first) and not first.cancelled():
            self._second = asyncio.ensure_future(self._receive())

    def heard(self) -> bool:
        """Whether the client went away before now; stops listening (asking again is safe)."""
        self._over = True
        gone = False
        for future in (self._first, self._second):
            if future is None:
                continue
            if future.done():
                gone = gone or _disconnect(future)
            else:
                future.remove_done_callback(self._again)
                future.cancel()
        return gone


def _disconnect(future: asyncio.Future[Message]) -> bool:
    if not future.done() or future.cancelled() or future.exception() is not None:
        return False
    return bool(future.result()["type"] == "http.disconnect")
