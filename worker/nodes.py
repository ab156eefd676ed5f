"""The pool of InfluxDB servers, and one pooled client per server.

The pool comes from INFLUXDB_NODES, INFLUXDB_NODES_FILE or, by default, INFLUXDB_URL as a pool
of one (``worker.settings``). A nodes file is read again whenever it changes, so operators can
add a server without restarting anything: the reconciler, the workers and the API all ask
``nodes()`` each time they need the pool.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from worker.influxdb import InfluxDB3Client
from worker.settings import NodeConfig, Settings, SettingsError, get_settings, read_nodes_file

logger = logging.getLogger(__name__)


class NodePool:
    """The configured InfluxDB servers of this process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._nodes = settings.default_nodes()
        self._file_stamp = self._stamp()
        self._clients: dict[str, tuple[NodeConfig, InfluxDB3Client]] = {}

    def nodes(self) -> tuple[NodeConfig, ...]:
        """The current nodes (the nodes file re-read if it changed since last time)."""
        path = self._settings.influxdb_nodes_file
        if path is None:
            return self._nodes
        with self._lock:
            stamp = self._stamp()
            if stamp != self._file_stamp:
                try:
                    self._nodes = read_nodes_file(path)
                    logger.info("node pool re-read: %s", ", ".join(n.name for n in self._nodes))
                except SettingsError as exc:
                    # A half-written or broken file must not empty the pool: keep the last one.
                    logger.error("keeping the previous node pool: %s", exc)
                self._file_stamp = stamp
            return self._nodes

    def node(self, name: str) -> NodeConfig | None:
        """The node called ``name``, if it is (still) configured."""
        return next((n for n in self.nodes() if n.name == name), None)

    def client(self, node: NodeConfig) -> InfluxDB3Client:
        """The pooled client for ``node`` (a new one if its URL or token changed)."""
        with self._lock:
            cached = self._clients.get(node.name)
            if cached is not None and cached[0] == node:
                return cached[1]
            client = InfluxDB3Client(
                node.url,
                node.token,
                connect_timeout=self._settings.influxdb_connect_timeout,
                read_timeout=self._settings.influxdb_read_timeout,
            )
            self._clients[node.name] = (node, client)
            if cached is not None:
                cached[1].close()
            return client

    def secrets(self) -> tuple[str, ...]:
        """Every node token as last read (no file check: cheap enough for every log line)."""
        return tuple(n.token for n in self._nodes if n.token)

    def _stamp(self) -> tuple[float, int] | None:
        path = self._settings.influxdb_nodes_file
        if path is None:
            return None
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)


_shared: NodePool | None = None
_shared_pid: int | None = None
_shared_lock = threading.Lock()


def shared_pool() -> NodePool:
    """This process's node pool (a new one after a fork: pooled sockets stay with the parent)."""
    global _shared, _shared_pid  # noqa: PLW0603 - one pool per process, by design
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid():
            _shared = NodePool(get_settings())
            _shared_pid = os.getpid()
        return _shared
