"""The node pool's format: one InfluxDB server (``NodeConfig``) and the JSON list of them that
INFLUXDB_NODES holds, or the file INFLUXDB_NODES_FILE names (re-read by ``worker.nodes`` when it
changes; docs/operating.md, "The node pool"). Each error names the variable or file and the entry;
a token is never in one, nor in a ``repr``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from worker.settings_rules import SettingsError, read_file, read_secret

_NODE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
MAX_LIMIT = 2**31 - 1  # influxdb_nodes.database_limit is an integer column


@dataclass(frozen=True)
class NodeConfig:
    """One InfluxDB server of the pool."""

    name: str
    url: str
    token: str | None = field(default=None, repr=False)
    database_limit: int = 5


def parse_nodes(text: str, source: str) -> tuple[NodeConfig, ...]:
    """Nodes from JSON: ``[{"name", "url", "token"? | "token_file"?, "database_limit"?}]``;
    ``source`` names the variable or file in every error message."""
    return _nodes(_decode(text, source), source)


def _decode(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested a thousand deep
        raise SettingsError(f"{source}: not valid JSON ({exc})") from None


def _nodes(entries: object, source: str) -> tuple[NodeConfig, ...]:
    if not isinstance(entries, list) or not entries:
        raise SettingsError(f"{source}: must be a non-empty JSON list of nodes")
    nodes: list[NodeConfig] = []
    for index, entry in enumerate(entries):
        where = f"{source}[{index}]"
        if not isinstance(entry, dict):
            raise SettingsError(f"{where}: must be an object with name and url")
        if unknown := set(entry) - {"name", "url", "token", "token_file", "database_limit"}:
            raise SettingsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name, url, limit = entry.get("name"), entry.get("url"), entry.get("database_limit", 5)
        if not isinstance(name, str) or not _NODE_NAME.match(name):
            raise SettingsError(f"{where}: name must match {_NODE_NAME.pattern}")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            # (never echoed: a URL may carry a password, and the pool's errors are logged)
            raise SettingsError(f"{where}.url must start with http:// or https://")
        if "?" in url or "#" in url:  # the API's paths are appended: a query would swallow them
            raise SettingsError(f"{where}.url must not carry a ?query or #fragment")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise SettingsError(
                f"{where}: database_limit must be a whole number from 1 to {MAX_LIMIT}"
            )
        given = {f"{where}.{k}": str(v) for k, v in entry.items() if k.startswith("token") and v}
        token = read_secret(given, f"{where}.token", f"{where}.token_file")
        nodes.append(NodeConfig(name, url.rstrip("/"), token, limit))
    if len({node.name for node in nodes}) != len(nodes):
        raise SettingsError(f"{source}: node names must be unique")
    return tuple(nodes)


@dataclass(frozen=True)
class NodesFile:
    """The nodes file as read once: its nodes, or why they cannot be used, and the token files
    it names (watched even then: a secret mounted a moment later makes it usable)."""

    nodes: tuple[NodeConfig, ...] | SettingsError
    token_files: tuple[str, ...]


def load_nodes_file(path: str) -> NodesFile:
    """The JSON file at ``path`` (INFLUXDB_NODES_FILE), read and parsed once."""
    source, entries = f"INFLUXDB_NODES_FILE ({path})", None
    try:
        entries = _decode(read_file("INFLUXDB_NODES_FILE", path), source)
        return NodesFile(_nodes(entries, source), _token_files(entries))
    except SettingsError as exc:
        return NodesFile(exc, _token_files(entries))


def read_nodes_file(path: str) -> tuple[NodeConfig, ...]:
    """Nodes from the JSON file at ``path`` (INFLUXDB_NODES_FILE); raise SettingsError."""
    nodes = load_nodes_file(path).nodes
    if isinstance(nodes, SettingsError):
        raise nodes
    return nodes


def _token_files(entries: object) -> tuple[str, ...]:
    """The token files ``entries`` name: a new token in one is a change of the pool."""
    if not isinstance(entries, list):
        return ()
    named = [e.get("token_file") for e in entries if isinstance(e, dict)]
    return tuple(str(p) for p in named if isinstance(p, str) and p.strip())
