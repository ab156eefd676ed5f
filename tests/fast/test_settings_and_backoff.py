"""Settings fail fast naming the variable; backoff is capped full jitter; secrets are redacted."""

from __future__ import annotations

import json
import random

import pytest

from worker.redaction import redact
from worker.runs import next_backoff
from worker.settings import Settings, SettingsError


def test_defaults_are_the_local_services():
    settings = Settings.from_env({})
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.influxdb_url == "http://127.0.0.1:8181"
    assert settings.influxdb_token is None
    assert settings.database_name("acme") == "telemetry_acme"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PROVISION_MAX_ATTEMPTS": "many"}, "PROVISION_MAX_ATTEMPTS"),
        ({"PROVISION_MAX_ATTEMPTS": "0"}, "PROVISION_MAX_ATTEMPTS"),
        ({"INFLUXDB_URL": "influx:8181"}, "INFLUXDB_URL"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"DATABASE_URL": "::not a url::"}, "DATABASE_URL"),
        ({"INFLUXDB_TOKEN": "a", "INFLUXDB_TOKEN_FILE": "/x"}, "INFLUXDB_TOKEN_FILE"),
        ({"INFLUXDB_TOKEN_FILE": "/nonexistent/token"}, "INFLUXDB_TOKEN_FILE"),
        ({"INFLUXDB_DATABASE_PREFIX": "_bad"}, "INFLUXDB_DATABASE_PREFIX"),
        ({"PROVISION_BACKOFF_CAP_SECONDS": "3000"}, "CELERY_VISIBILITY_TIMEOUT"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ],
)
def test_invalid_settings_fail_fast_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_token_file_is_read_and_stripped(tmp_path):
    path = tmp_path / "token"
    path.write_text("file-token-value\n")
    settings = Settings.from_env({"INFLUXDB_TOKEN_FILE": str(path)})
    assert settings.influxdb_token == "file-token-value"
    assert "file-token-value" not in repr(settings)
    assert "file-token-value" in settings.secrets()


def test_postgres_url_uses_psycopg3():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:pw@h/db"})
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert "pw" in settings.secrets()


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (9, 300.0), (30, 300.0)]:
        delays = [next_backoff(attempt, 2.0, 300.0, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # it does use the whole range
        assert min(delays) < ceiling * 0.1


def test_redaction_removes_known_secrets_headers_and_url_passwords():
    text = "Bearer abcdefgh1234 at redis://:hunter2@host:6379/0 with s3cr3t-value"
    cleaned = redact(text, ["s3cr3t-value"])
    assert "abcdefgh1234" not in cleaned
    assert "hunter2" not in cleaned
    assert "s3cr3t-value" not in cleaned


def test_influxdb_url_alone_is_a_pool_of_one():
    settings = Settings.from_env({"INFLUXDB_URL": "http://influx:8181", "INFLUXDB_TOKEN": "tok"})
    (node,) = settings.default_nodes()
    assert (node.name, node.url, node.token, node.database_limit) == (
        "default",
        "http://influx:8181",
        "tok",
        5,
    )


def test_nodes_json_with_token_files(tmp_path):
    token = tmp_path / "t"
    token.write_text("node-secret-1\n")
    nodes = json.dumps(
        [
            {"name": "core-1", "url": "http://a:8181", "token_file": str(token)},
            {"name": "ent-1", "url": "https://b:8181/", "database_limit": 100},
        ]
    )
    settings = Settings.from_env({"INFLUXDB_NODES": nodes})
    first, second = settings.default_nodes()
    assert (first.name, first.token, first.database_limit) == ("core-1", "node-secret-1", 5)
    assert (second.url, second.token, second.database_limit) == ("https://b:8181", None, 100)
    assert "node-secret-1" in settings.secrets()
    assert "node-secret-1" not in repr(settings)


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"url": "http://a"}]', r"INFLUXDB_NODES\[0\]: name"),
        ('[{"name": "a", "url": "ftp://a"}]', r"INFLUXDB_NODES\[0\].url"),
        ('[{"name": "a", "url": "http://a", "database_limit": 0}]', "database_limit"),
        ('[{"name": "a", "url": "http://a", "colour": "red"}]', "unknown key"),
        ('[{"name": "a", "url": "http://a"}, {"name": "a", "url": "http://b"}]', "unique"),
    ],
)
def test_bad_node_pools_fail_fast_with_the_place(nodes, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"INFLUXDB_NODES": nodes})


def test_retention_and_hard_delete_settings_are_validated():
    assert (
        Settings.from_env({"INFLUXDB_RETENTION_PERIOD": "30d"}).influxdb_retention_period == "30d"
    )
    with pytest.raises(SettingsError, match="INFLUXDB_RETENTION_PERIOD"):
        Settings.from_env({"INFLUXDB_RETENTION_PERIOD": "a month"})
    with pytest.raises(SettingsError, match="INFLUXDB_HARD_DELETE_AT"):
        Settings.from_env({"INFLUXDB_HARD_DELETE_AT": "soon"})
    assert Settings.from_env({"INFLUXDB_HARD_DELETE_AT": "now"}).influxdb_hard_delete_at == "now"
