"""After the worker loses Redis, what it still holds from the old connection fails as a
connection error, which Celery survives, not as the AttributeError that wedged the worker.

Celery collects a broken broker connection (kombu closes its channel and unhooks the transport),
and a task that finishes afterwards acks its message on that old channel
(``worker/broker_transport.py``). The process-level proof is the Redis restart drill
(``tests/drills/test_faults.py``) and the seeded schedule; these pin the mechanism itself.
"""

from __future__ import annotations

import secrets

import pytest
from kombu import Connection
from kombu.message import Message
from kombu.transport import redis as kombu_redis

from tests.conftest import REDIS_DB, REDIS_HOST, REDIS_PORT
from worker import broker_transport
from worker.celery_app import app

URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def delivered_then_collected(connection: Connection, queue_name: str) -> Message:
    """A message taken from a queue of its own, unacked, on a connection then collected.

    The channel is left as the wedged worker's traceback shows it: its transport unhooked
    (``collect()``) and its Redis pool dropped (what the channel's close does first; a close
    that fails part way, the server being gone, leaves it so)."""
    queue = connection.SimpleQueue(queue_name)
    queue.put({"n": 1})
    message: Message = queue.get(timeout=2)
    connection.collect()
    message.channel._disconnect_pools()
    return message


def test_the_app_gives_kombus_redis_transport_our_channel(broker) -> None:
    with app.connection_for_write(URL) as connection:
        assert isinstance(connection.default_channel, broker_transport.Channel)
        assert connection.as_uri().startswith("redis://")  # what Celery and Flower print


def test_an_ack_on_a_collected_connection_fails_as_a_connection_error(broker) -> None:
    # Given a message the worker took from Redis and has not acked yet
    queue_name = f"tp-test-reconnect-{secrets.token_hex(4)}"
    with app.connection_for_write(URL) as connection:
        errors = connection.connection_errors

        # When the connection is collected (what Celery does once it has lost the broker)
        message = delivered_then_collected(connection, queue_name)

        # Then acking on the old channel fails as the broker being gone, which Celery logs
        # ("Couldn't ack") and survives
        with pytest.raises(errors) as caught:
            message.ack()
        assert not isinstance(caught.value, AttributeError)
        message.ack_log_error(kombu_redis.logger, errors)  # does not raise

    # And the message is still in Redis: collecting gave it back to its queue
    with Connection(URL) as fresh:
        again = fresh.SimpleQueue(queue_name).get(timeout=2)
        assert again.payload == {"n": 1}
        again.ack()
        fresh.default_channel.queue_delete(queue_name)


def test_kombus_own_channel_fails_that_ack_with_an_attribute_error(broker) -> None:
    # The defect this mends, shown on kombu's own channel class: if this stops failing, a
    # kombu release has fixed it and broker_transport can go.
    queue_name = f"tp-test-reconnect-{secrets.token_hex(4)}"
    original = kombu_redis.Transport.Channel
    kombu_redis.Transport.Channel = kombu_redis.Channel
    try:
        with Connection(URL) as connection:
            assert type(connection.default_channel) is kombu_redis.Channel
            message = delivered_then_collected(connection, queue_name)
            with pytest.raises(AttributeError, match=r"hostname|client"):
                message.ack()
    finally:
        kombu_redis.Transport.Channel = original
    with Connection(URL) as fresh:
        fresh.default_channel.queue_delete(queue_name)
