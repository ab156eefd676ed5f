"""Settings: one pydantic-settings model, read and checked from it, and docs/settings.md agrees.

Pure tests: no Redis, no Postgres, no worker. They read docs/settings.md and ``worker.settings``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from influxdb3_standin import StandIn
from worker.nodes import NodePool
from worker.settings import Settings, SettingsError, facts
from worker.settings_doc import FLOWER, row, settings_table_markdown
from worker.settings_rules import show

SETTINGS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
FIELDS = Settings.model_fields


def readme_settings_table() -> list[str]:
    """The table lines of docs/settings.md (the first table of the page)."""
    lines = SETTINGS_PAGE.read_text(encoding="utf-8").splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("# Settings"))
    table: list[str] = []
    for line in lines[heading + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table or line.startswith("## "):
            break
    return table


# --- the declarations and the docs --------------------------------------------------------------


def test_the_readme_table_is_the_one_printed_from_the_declarations():
    expected = settings_table_markdown().splitlines()
    assert readme_settings_table() == expected, (
        "docs/settings.md's settings table differs from the Settings model (worker/settings.py); "
        "replace it with the output of `python -m worker.settings_doc`"
    )


def test_each_variable_is_declared_exactly_once():
    assert all(field.alias for field in FIELDS.values()), "a field without its variable"
    named = [name for f in FIELDS.values() for name in re.findall(r"`(\w+)`", row(f)[0])]
    assert len(named) == len(set(named)), "a variable is declared twice"
    assert len(named) == len(FIELDS) + sum(bool(facts(f)["file"]) for f in FIELDS.values())
    # The Flower wrapper's variables are not Settings': the page explains them below the table
    page = SETTINGS_PAGE.read_text(encoding="utf-8")
    assert all(f"`{name}`" in page and name not in named for name in FLOWER)


def test_every_default_passes_its_own_checks():
    defaults = Settings.from_env({})
    for name, field in FIELDS.items():
        if field.default not in (None, ()):
            # As if it had been set explicitly, the default reads back as itself
            explicit = Settings.from_env({str(field.alias): show(field.default)})
            assert getattr(explicit, name) == field.default == getattr(defaults, name), name


def test_derived_defaults_name_an_earlier_setting():
    seen: set[str] = set()
    for field in FIELDS.values():
        if facts(field)["default_from"]:
            assert facts(field)["default_from"] in seen, field.alias
            assert field.default is None, f"{field.alias}: default and default_from"
        seen.add(str(field.alias))


def test_every_declaration_explains_itself_on_one_line():
    for field in FIELDS.values():
        assert (field.description or "").strip(), f"{field.alias} has no help text"
    for cells in map(row, FIELDS.values()):
        assert all(cell.strip() and "\n" not in cell for cell in cells), cells


# --- reading ------------------------------------------------------------------------------------


def test_defaults_are_the_local_services():
    settings = Settings.from_env({})
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.influxdb_url == "http://127.0.0.1:8181"
    assert settings.influxdb_token is None
    assert settings.max_attempts == 10
    assert settings.database_name("acme") == "telemetry_acme"


def test_a_given_mapping_is_all_that_is_read(monkeypatch, tmp_path):
    # Given a process environment and a .env file that both set variables
    monkeypatch.setenv("PROVISION_MAX_ATTEMPTS", "3")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LOG_LEVEL=DEBUG\n")
    # Then a mapping given to from_env is read alone; without one, the environment is read
    assert (Settings.from_env({}).max_attempts, Settings.from_env({}).log_level) == (10, "INFO")
    assert Settings.from_env().max_attempts == 3


def test_requeue_grace_defaults_to_the_interval():
    assert Settings.from_env({}).reconcile_requeue_after_seconds == 60.0
    settings = Settings.from_env({"RECONCILE_INTERVAL_SECONDS": "15"})
    assert settings.reconcile_requeue_after_seconds == 15.0
    settings = Settings.from_env({"RECONCILE_REQUEUE_AFTER_SECONDS": "0"})
    assert settings.reconcile_requeue_after_seconds == 0.0


def test_values_are_converted_and_normalised():
    settings = Settings.from_env(
        {"LOG_LEVEL": " debug ", "INFLUXDB_URL": "https://influx:8181/", "LIVE_CHECK_TIMEOUT": "1"}
    )
    assert settings.log_level == "DEBUG"
    assert settings.influxdb_url == "https://influx:8181"
    assert settings.live_check_timeout == 1.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROVISION_MAX_ATTEMPTS": "0"}, "PROVISION_MAX_ATTEMPTS must be at least 1 (got '0')"),
        (
            {"INFLUXDB_DATABASE_LIMIT": "2147483648"},
            "INFLUXDB_DATABASE_LIMIT must be at most 2147483647 (got '2147483648')",
        ),
        ({"PROVISION_MAX_ATTEMPTS": "2.5"}, "PROVISION_MAX_ATTEMPTS must be a whole number"),
        ({"LIVE_CHECK_TIMEOUT": "abc"}, "LIVE_CHECK_TIMEOUT must be a number (got 'abc')"),
        ({"LIVE_CHECK_TIMEOUT": "0.05"}, "LIVE_CHECK_TIMEOUT must be at least 0.1"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL must be one of DEBUG, INFO"),
        ({"INFLUXDB_URL": "influx:8181"}, "INFLUXDB_URL must be an http:// or https:// URL"),
        ({"INFLUXDB_URL": "http://i/?token=s"}, "INFLUXDB_URL must be an http:// or https:// URL"),
        (
            {"FLOWER_URL": "https://admin:pw@flower"},
            "FLOWER_URL must be an http(s) URL without credentials",
        ),
        ({"INFLUXDB_DATABASE_PREFIX": "much_too_long_"}, "INFLUXDB_DATABASE_PREFIX must be 1 to"),
        ({"EVENTS_SOURCE": "prod eu"}, "EVENTS_SOURCE must be a URI reference such as"),
        (
            {"INFLUXDB_TOKEN": "a", "INFLUXDB_TOKEN_FILE": "/x"},
            "set either INFLUXDB_TOKEN or INFLUXDB_TOKEN_FILE, not both",
        ),
        (
            {"OPERATOR_TOKEN": "a", "OPERATOR_TOKEN_FILE": "/x"},
            "set either OPERATOR_TOKEN or OPERATOR_TOKEN_FILE, not both",
        ),
    ],
)
def test_error_messages_name_the_variable_and_the_bound(env, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message)


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
        # a deletion waits that long for the location clients, unacknowledged, as a retry
        ({"LOCATIONS_MAX_STALENESS_SECONDS": "7200"}, "CELERY_VISIBILITY_TIMEOUT"),
        ({"PROVISION_SOFT_TIME_LIMIT": "95"}, "PROVISION_SOFT_TIME_LIMIT"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"INFLUXDB_NODES": "[]", "INFLUXDB_NODES_FILE": "/x"}, "INFLUXDB_NODES_FILE"),
    ],
)
def test_invalid_settings_fail_fast_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


# --- the broker ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "broker"),
    [
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://:pw@redis.example:6380/1", "redis"),
        ("amqp://guest:guest@127.0.0.1:5672//", "rabbitmq"),
        ("pyamqp://user:pw@rabbit/tenants", "rabbitmq"),
        ("AMQPS://user:pw@rabbit:5671/tenants", "rabbitmq"),
    ],
)
def test_the_broker_is_redis_or_rabbitmq_by_its_scheme(url, broker):
    settings = Settings.from_env({"CELERY_BROKER_URL": url})
    assert settings.broker == broker
    assert settings.broker_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://broker:9092", "got scheme 'kafka'"),
        ("redis:6379", "got no scheme"),
        ("broker", "got no scheme"),
        ("amqp://user:hunter2@rabbit:notaport/", "CELERY_BROKER_URL is not a valid URL"),
    ],
)
def test_a_broker_url_of_another_kind_is_refused_without_repeating_it(url, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"CELERY_BROKER_URL": url})
    assert raised.value.args[0].startswith("CELERY_BROKER_URL ")
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_redis_visibility_timeout_binds_only_redis():
    # Given retries that wait up to 15 minutes: twice (900 + 90) s is past Redis's 3600 s
    slow = {"PROVISION_BACKOFF_CAP_SECONDS": "900", "CELERY_VISIBILITY_TIMEOUT": "1980"}
    with pytest.raises(SettingsError, match="CELERY_VISIBILITY_TIMEOUT"):
        Settings.from_env({**slow, "CELERY_VISIBILITY_TIMEOUT": "1900"})
    assert Settings.from_env(slow).broker == "redis"

    # Then RabbitMQ ignores the visibility timeout: its consumer_timeout (30 min) binds instead
    rabbit = {"CELERY_BROKER_URL": "amqp://rabbit//", "CELERY_VISIBILITY_TIMEOUT": "10"}
    assert Settings.from_env(rabbit).broker_consumer_timeout == 1800
    with pytest.raises(SettingsError, match="RABBITMQ_CONSUMER_TIMEOUT") as raised:
        Settings.from_env({**rabbit, "PROVISION_BACKOFF_CAP_SECONDS": "900"})
    assert "consumer_timeout" in str(raised.value)

    # And a server configured for longer waits is told so, and the same settings pass
    longer = {**rabbit, "PROVISION_BACKOFF_CAP_SECONDS": "900", "RABBITMQ_CONSUMER_TIMEOUT": "3600"}
    assert Settings.from_env(longer).backoff_cap_seconds == 900.0


def test_a_broker_password_is_a_secret_decoded_and_as_written():
    settings = Settings.from_env({"CELERY_BROKER_URL": "amqp://tp:s3cr%2Fet@rabbit:5672/tp"})
    assert {"s3cr/et", "s3cr%2Fet"} <= set(settings.secrets())


def test_token_file_is_read_and_stripped(tmp_path):
    path = tmp_path / "token"
    path.write_text("file-token-value\n")
    settings = Settings.from_env({"INFLUXDB_TOKEN_FILE": str(path)})
    assert settings.influxdb_token == "file-token-value"
    assert "file-token-value" not in repr(settings)
    assert "file-token-value" in settings.secrets()


def test_urls_with_their_passwords_come_from_files(tmp_path):
    database, broker = tmp_path / "database_url", tmp_path / "broker_url"
    database.write_text("postgresql://tenant_provisioner:pg-pass@postgres:5432/tp\n")
    broker.write_text("redis://:redis-pass@redis:6379/0\n")
    settings = Settings.from_env(
        {"DATABASE_URL_FILE": str(database), "CELERY_BROKER_URL_FILE": str(broker)}
    )
    assert (
        settings.database_url == "postgresql+psycopg://tenant_provisioner:pg-pass@postgres:5432/tp"
    )
    assert settings.broker_url == "redis://:redis-pass@redis:6379/0"
    assert {"pg-pass", "redis-pass"} <= set(settings.secrets())
    with pytest.raises(SettingsError, match="set either DATABASE_URL or DATABASE_URL_FILE"):
        Settings.from_env({"DATABASE_URL_FILE": str(database), "DATABASE_URL": "postgresql://x/y"})


def test_an_empty_token_file_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(SettingsError, match=r"OPERATOR_TOKEN_FILE: .* is empty"):
        Settings.from_env({"OPERATOR_TOKEN_FILE": str(path)})


def test_postgres_url_uses_psycopg3():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:pw@h/db"})
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert "pw" in settings.secrets()


def test_retention_and_hard_delete_settings_are_validated():
    assert (
        Settings.from_env({"INFLUXDB_RETENTION_PERIOD": "30d"}).influxdb_retention_period == "30d"
    )
    with pytest.raises(SettingsError, match="INFLUXDB_RETENTION_PERIOD"):
        Settings.from_env({"INFLUXDB_RETENTION_PERIOD": "a month"})
    with pytest.raises(SettingsError, match="INFLUXDB_HARD_DELETE_AT"):
        Settings.from_env({"INFLUXDB_HARD_DELETE_AT": "soon"})
    assert Settings.from_env({"INFLUXDB_HARD_DELETE_AT": "now"}).influxdb_hard_delete_at == "now"


# --- the node pool ------------------------------------------------------------------------------


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


def test_nodes_file_is_read_and_remembered(tmp_path):
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps([{"name": "core-1", "url": "http://a:8181"}]))
    settings = Settings.from_env({"INFLUXDB_NODES_FILE": str(path)})
    assert settings.influxdb_nodes_file == str(path)
    assert [node.name for node in settings.default_nodes()] == ["core-1"]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"url": "http://a"}]', r"INFLUXDB_NODES\[0\]: name"),
        ('[{"name": "a", "url": "ftp://a"}]', r"INFLUXDB_NODES\[0\].url"),
        ('[{"name": "a", "url": "http://a/?token=s"}]', r"INFLUXDB_NODES\[0\].url must not"),
        ('[{"name": "a", "url": "http://a#s"}]', r"INFLUXDB_NODES\[0\].url must not"),
        ('[{"name": "a", "url": "http://a", "database_limit": 0}]', "database_limit"),
        # (stored in an integer column: beyond it, every placement would fail)
        ('[{"name": "a", "url": "http://a", "database_limit": 2147483648}]', "1 to 2147483647"),
        ('[{"name": "a", "url": "http://a", "colour": "red"}]', "unknown key"),
        ('[{"name": "a", "url": "http://a"}, {"name": "a", "url": "http://b"}]', "unique"),
        (
            '[{"name": "a", "url": "http://a", "token": "t", "token_file": "/x"}]',
            r"INFLUXDB_NODES\[0\].token or INFLUXDB_NODES\[0\].token_file",
        ),
    ],
)
def test_bad_node_pools_fail_fast_with_the_place(nodes, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"INFLUXDB_NODES": nodes})


@pytest.mark.parametrize("variable", ["OPERATOR_TOKEN", "LOCATIONS_TOKEN"])
def test_a_token_shorter_than_32_characters_stops_the_process_naming_it(variable):
    with pytest.raises(SettingsError, match=f"{variable} must be at least 32 characters"):
        Settings.from_env({variable: "s3cret-but-short"})
    assert getattr(Settings.from_env({variable: "x" * 32}), variable.lower()) == "x" * 32


def test_a_locations_token_that_is_the_operator_token_stops_the_process():
    # The locations token only reads: the operator's would make every writer an operator
    shared = "o" * 40
    with pytest.raises(SettingsError, match="LOCATIONS_TOKEN must not be OPERATOR_TOKEN") as no:
        Settings.from_env({"OPERATOR_TOKEN": shared, "LOCATIONS_TOKEN": shared})
    assert shared not in str(no.value)
    assert Settings.from_env({"OPERATOR_TOKEN": shared, "LOCATIONS_TOKEN": "r" * 40})
    # (the metrics token may be: unset, the scrape takes the operator token all the same)
    assert Settings.from_env({"OPERATOR_TOKEN": shared, "METRICS_TOKEN": shared})


def test_a_malformed_database_url_is_refused_without_repeating_its_password():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DATABASE_URL": "postgresql://user:s3cretpw@db:abc/x"})
    assert "DATABASE_URL" in str(refused.value)
    assert "s3cretpw" not in str(refused.value)


def test_a_rotated_token_file_is_used_without_a_restart(tmp_path):
    # Given a server and a pool whose node's token is in a file of its own
    server = StandIn(token="first-token").start()
    token = tmp_path / "core-1.token"
    token.write_text("first-token")
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps([{"name": "core-1", "url": server.url, "token_file": str(token)}]))
    pool = NodePool(Settings.from_env({"INFLUXDB_NODES_FILE": str(nodes)}))
    try:
        assert pool.client(pool.nodes()[0]).list_databases() == []

        # When the secret is rotated on the server and in its file, the nodes file untouched
        server.set_token("second-token-longer")
        token.write_text("second-token-longer")

        # Then the pool's next look uses it (the nodes file alone says nothing changed)
        assert pool.client(pool.nodes()[0]).list_databases() == []
    finally:
        server.stop()


def test_a_node_whose_token_file_arrives_after_the_nodes_file_is_taken_when_it_does(tmp_path):
    # Given a pool of one, then a second node added whose secret is not mounted yet
    nodes = tmp_path / "nodes.json"
    entries = [{"name": "a", "url": "http://a:8181"}]
    nodes.write_text(json.dumps(entries))
    pool = NodePool(Settings.from_env({"INFLUXDB_NODES_FILE": str(nodes)}))
    assert [node.name for node in pool.nodes()] == ["a"]
    late = tmp_path / "b.token"
    entries.append({"name": "b", "url": "http://b:8181", "token_file": str(late)})
    nodes.write_text(json.dumps(entries))
    assert [node.name for node in pool.nodes()] == ["a"]  # b cannot be used yet: kept as was

    # When the secret arrives, the nodes file untouched
    late.write_text("b-token")

    # Then the next look takes the whole file
    assert [(node.name, node.token) for node in pool.nodes()] == [("a", None), ("b", "b-token")]
