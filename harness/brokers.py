"""A RabbitMQ virtual host of a run's own, and what a test may do to the server: restart it.

The local RabbitMQ (``amqp://guest:guest@127.0.0.1:5672//``) is shared by test runs and
benchmarks; each run gets a vhost of its own (its queues and messages are nobody else's),
deleted with everything in it at the end. Everything goes through ``rabbitmqctl``, run as the
user who may administer the local node (root on our machines).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
USER = "guest"


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """``rabbitmqctl -q ARGS``; its output. Raises CalledProcessError naming what failed."""
    command = shutil.which("rabbitmqctl")
    if command is None:
        raise FileNotFoundError("rabbitmqctl is not on PATH: is RabbitMQ installed here?")
    return subprocess.run(
        [command, "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout


class RabbitMQVhost:
    """A vhost of the local RabbitMQ that ``guest`` may use fully; ``url`` is its broker URL."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = RABBITMQ_URL + urllib.parse.quote(name, safe="")

    def create(self) -> RabbitMQVhost:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, USER, ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        """Delete the vhost, its queues and their messages (nothing if it is gone already)."""
        if self.name in rabbitmqctl("list_vhosts", "name").split():
            rabbitmqctl("delete_vhost", self.name)

    def queues(self) -> dict[str, dict[str, str]]:
        """Queue name -> ``messages`` (ready + unacknowledged) and ``durable``, per the server."""
        table = rabbitmqctl(
            "list_queues", "--no-table-headers", "-p", self.name, "name", "messages", "durable"
        )
        rows = (line.split("\t") for line in table.splitlines() if line.strip())
        return {row[0]: {"messages": row[1], "durable": row[2]} for row in rows if len(row) == 3}

    def purge(self, queues: tuple[str, ...]) -> None:
        """Drop the messages waiting in ``queues`` (those that exist)."""
        for queue in set(self.queues()) & set(queues):
            rabbitmqctl("purge_queue", "-p", self.name, queue)

    def messages(self, queue: str) -> int:
        """Messages in ``queue`` (0 when it does not exist yet)."""
        return int(self.queues().get(queue, {}).get("messages", 0))


def restart_rabbitmq() -> None:
    """Stop and start the RabbitMQ application inside the running node (every connection is
    closed; what is durable is read back from disk), then wait until it serves again."""
    try:
        rabbitmqctl("stop_app")
    finally:
        rabbitmqctl("start_app", timeout=120.0)
        rabbitmqctl("await_startup", timeout=120.0)
