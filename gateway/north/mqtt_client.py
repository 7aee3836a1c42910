"""One aiomqtt connection as a context, without asyncio's "Future exception was never retrieved" after it.

aiomqtt keeps the reason a connection was lost in a future. Its `__aexit__` returns at once for a client that is
already disconnected, and when nothing was iterating the messages at that moment (a subscribe or a publish failed
instead) nobody takes the reason from it: asyncio then logs an error when the future is collected, long after and
far from the cause. `connection()` takes it once the context is left; what went wrong was raised already.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiomqtt


@contextlib.asynccontextmanager
async def connection(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    try:
        async with client:
            yield client
    finally:
        lost = getattr(client, "_disconnected", None)  # aiomqtt's future of the lost connection's reason
        if lost is not None and lost.done() and not lost.cancelled():
            lost.exception()  # taken: not logged when the future is collected
