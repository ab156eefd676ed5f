"""The pool of InfluxDB servers, and one pooled client per server.

The pool comes from INFLUXDB_NODES, INFLUXDB_NODES_FILE or, by default, INFLUXDB_URL as a pool
of one (``worker.settings``). A nodes file is read again whenever it changes, so operators can
add a server without restarting anything: the reconciler, the workers and the API all ask
``nodes()`` each time they need the pool, and the first call of every process reads the file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from worker.errors import ProvisioningError
from worker.influxdb import InfluxDB3Client
from worker.node_config import NodeConfig, load_nodes_file
from worker.settings import Settings, SettingsError, get_settings

# NodeConfig too: the pool's element (defined with its JSON format in worker.node_config).
__all__ = [
    "Listing",
    "NodeConfig",
    "NodePool",
    "list_as_answered",
    "list_everywhere",
    "shared_pool",
]
logger = logging.getLogger(__name__)


class NodePool:
    """The configured InfluxDB servers of this process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        # Only a fallback for a nodes file that cannot be read: the file itself is read at the
        # first nodes() call, so a process that starts before an edit and first looks after it
        # sees the edit (the settings' copy may be older than the file).
        self._nodes = settings.default_nodes()
        self._file_stamp: object = _NEVER_READ
        self._token_files: tuple[str, ...] = ()  # named by the nodes file as last read
        self._clients: dict[str, tuple[NodeConfig, InfluxDB3Client]] = {}

    def nodes(self) -> tuple[NodeConfig, ...]:
        """The current nodes (the nodes file re-read if it, or a token file it names, changed
        since last time: a rotated token is used without a restart)."""
        path = self._settings.influxdb_nodes_file
        if path is None:
            return self._nodes
        with self._lock:
            stamp = self._stamp()
            if stamp != self._file_stamp:
                # Watched even when the file cannot be used yet: a token file it names may
                # arrive after it (a secret mounted a moment later).
                file = load_nodes_file(path)
                self._token_files = file.token_files
                if isinstance(file.nodes, SettingsError):
                    # A half-written or broken file must not empty the pool: keep the last one.
                    logger.error("keeping the previous node pool: %s", file.nodes)
                else:
                    self._nodes = file.nodes
                    logger.info("node pool re-read: %s", ", ".join(n.name for n in self._nodes))
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

    def _stamp(self) -> tuple[tuple[int, int, int] | None, ...] | None:
        path = self._settings.influxdb_nodes_file
        if path is None:
            return None
        return tuple(_stat(file) for file in (path, *self._token_files))


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    # The inode too: an atomic replace (write, then rename) within one mtime tick.
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


_NEVER_READ = object()


@dataclass(frozen=True)
class Listing:
    """One node's databases as one list call saw them; ``names`` is None when it failed.
    ``deleted``: its soft-deleted ones (``NAME-YYYYMMDDTHHMMSS``, until their hard deletion),
    stamped by its clock, which read ``date`` (an HTTP date, or None) as it answered."""

    names: frozenset[str] | None
    error: ProvisioningError | None = None
    deleted: frozenset[str] = frozenset()
    date: str | None = None


def list_everywhere(pool: NodePool, nodes: Sequence[NodeConfig]) -> dict[str, Listing]:
    """One list call per node, all at once: a few hanging servers cost one timeout, not one
    each. Never raises for InfluxDB's sake; a failed call is a Listing without names."""
    answers = {node.name: listing for node, listing in list_as_answered(pool, nodes)}
    return {node.name: answers[node.name] for node in nodes}  # in the nodes' order


def list_as_answered(
    pool: NodePool, nodes: Sequence[NodeConfig]
) -> Iterator[tuple[NodeConfig, Listing]]:
    """As :func:`list_everywhere`, each node's listing yielded as soon as it answers, so a
    caller can use it and let it go before the next one arrives."""

    def list_one(node: NodeConfig) -> Listing:
        try:
            names, deleted, date = pool.client(node).list_all()
            return Listing(frozenset(names), None, frozenset(deleted), date)
        except ProvisioningError as exc:
            return Listing(None, exc)

    if not nodes:
        return
    workers = min(16, len(nodes))
    waiting = iter(nodes)
    listing = ThreadPoolExecutor(max_workers=workers)
    try:
        # A window of calls in flight, not all at once: answers must not pile up in memory
        # faster than the caller lets them go.
        calls = {listing.submit(list_one, node): node for node in islice(waiting, 2 * workers)}
        while calls:
            done, _ = wait(calls, return_when=FIRST_COMPLETED)
            for call in done:
                yield calls.pop(call), call.result()
                for node in islice(waiting, 1):
                    calls[listing.submit(list_one, node)] = node
    finally:
        # A caller that stops early (an error, the soft time limit) waits for the calls in
        # flight, not for those that have not started.
        listing.shutdown(wait=True, cancel_futures=True)


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
