"""kombu's Redis transport, mended where a lost broker connection wedged the worker.

When the worker loses Redis, Celery (5.7.0) collects the broken connection: kombu closes its
channel and then unhooks the transport from it (``transport.client = None``). Two things can
still reach that old channel afterwards:

- Celery closes the connection once more; if the channel's first close failed part way (the
  server was already gone), the second one tries to put the unacked messages back;
- a task that finishes after the loss acks its message on the channel it came from.

Either way the channel builds a Redis client from its ``connection.client`` and fails with
``AttributeError: 'NoneType' object has no attribute 'hostname'`` (or ``'client'``, once the
channel itself has closed). That is not a connection
error, so Celery logs ``Unrecoverable error`` and the worker neither consumes nor exits: in the
seeded schedule, 104 of 234 broker restarts ended that way (docs/schedule.md).

Here such a channel raises Redis' ``ConnectionError`` instead, which every caller already
handles as the broker being gone: the close is ignored, the ack is logged as failed, and the
consumer reconnects. Nothing is lost by it: an unacked message stays in Redis' unacked set and
comes back after the visibility timeout (the task is idempotent), and a Redis that restarted
empty lost it anyway (the reconciler re-queues what Postgres says is owed).

``install()`` (called where the Celery app is made) gives kombu's Redis transport this channel.
It replaces the class kombu uses rather than naming a transport of our own in
``broker_transport``: that would change the scheme in every URL Celery and Flower print, and
Flower picks its broker page by that scheme.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection  # None once the channel closed, or its client once collected
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


def install() -> None:
    """Make kombu's Redis transport (``redis://`` and ``rediss://``) open our channels."""
    redis.Transport.Channel = Channel
