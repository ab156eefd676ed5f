"""The deployment files, checked without a Docker engine.

No engine runs on the test machines, so ``docker compose up`` cannot be tried here. These tests
hold ``docker-compose.yml`` and the ``Dockerfile`` to everything that can be known statically:
the services exist and wait for what they need, every app command runs code that is really in
the repository and really in the image, every variable set is one the code reads, no secret is
written down or passed through the environment, and every service runs with least privilege
(the app as a non-superuser Postgres role, Redis behind a password, capabilities dropped).
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery
from sqlalchemy.engine import make_url

from worker.queues import ALL_QUEUES, WEBHOOKS_QUEUE
from worker.settings import Settings
from worker.settings_doc import variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRETS_DIR = ROOT / "secrets"
POSTGRES_INIT_DIR = ROOT / "deploy" / "postgres-init"
APP_ROLE = "tenant_provisioner"  # the app's Postgres role: no superuser, owns its database

INFRA_SERVICES = ("postgres", "redis", "rabbitmq", "influxdb")
APP_SERVICES = ("migrate", "worker", "webhooks", "beat", "flower", "api")
SECRETS_MOUNT = "/run/secrets/"

# What each app service waits for before it starts (RabbitMQ: only when its profile is on).
EXPECTED_DEPENDENCIES = {
    "migrate": {"postgres": "service_healthy"},
    "worker": {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "rabbitmq": "service_healthy",
        "influxdb": "service_healthy",
    },
    "webhooks": {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "rabbitmq": "service_healthy",
    },
    "beat": {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "rabbitmq": "service_healthy",
    },
    "flower": {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "rabbitmq": "service_healthy",
    },
    "api": {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "rabbitmq": "service_healthy",
        "influxdb": "service_healthy",
    },
}

# Exactly the secrets each service mounts: what it reads, and nothing more (Flower and beat
# never touch the database; only the API and the worker talk to InfluxDB).
EXPECTED_SECRETS = {
    "postgres": {"postgres_password", "postgres_app_password"},
    "redis": {"redis_password"},
    "rabbitmq": {"rabbitmq_password"},
    "influxdb": {"influxdb_admin_token", "influxdb_token"},
    "migrate": {"database_url"},
    "worker": {"database_url", "celery_broker_url", "influxdb_token"},
    # the webhook endpoints and their signing secrets: this service alone
    "webhooks": {"database_url", "celery_broker_url", "webhooks"},
    "beat": {"celery_broker_url"},
    "flower": {"celery_broker_url", "flower_basic_auth"},
    "api": {
        "database_url",
        "celery_broker_url",
        "influxdb_token",
        "operator_token",
        "locations_token",
        "metrics_token",
    },
}
# Services whose root filesystem is read-only, and the tmpfs each needs besides its volumes.
READ_ONLY_TMPFS = {
    **{name: {"/tmp"} for name in APP_SERVICES},
    "postgres": {"/var/run/postgresql", "/tmp"},  # the Unix socket and its lock file
    "redis": {"/tmp"},  # the config generated from the password file
}
# The images' own unprivileged users, set from the start so no entrypoint needs root to chown
# or switch user (InfluxDB's image already runs as its user).
INFRA_USERS = {"postgres": "postgres", "redis": "redis", "rabbitmq": "rabbitmq"}

# A variable that names a credential: its value may only be the path of a mounted secret.
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASS\b|PASS_|TOKEN|SECRET|AUTH|CREDENTIAL|_KEY\b")
# ${NAME...}: a value Compose takes from the operator's environment ($$ is a literal $).
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
SECRET_FILE_REFERENCE = re.compile(r"(?:/run/secrets/|\./secrets/)[\w.-]+")


def load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as stream:
        document = yaml.safe_load(stream)
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def environment_of(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return {key: None if value is None else str(value) for key, value in environment.items()}
    pairs = (entry.partition("=") for entry in environment)
    return {key: value if sep else None for key, sep, value in pairs}


def option(argv: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in ``argv``, else None."""
    for index, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
    return None


def strings_in(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (mapping keys are names, not values)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


def mounted_secrets(service: dict[str, Any]) -> dict[str, str]:
    """Secret name -> the path it is mounted at inside the service's containers."""
    mounts = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, str):
            mounts[entry] = SECRETS_MOUNT + entry
        else:
            target = entry.get("target", entry["source"])
            mounts[entry["source"]] = target if target.startswith("/") else SECRETS_MOUNT + target
    return mounts


def volume_targets(service: dict[str, Any]) -> list[str]:
    targets = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            targets.append(entry.split(":")[1])
        else:
            targets.append(entry["target"])
    return targets


def shell_script(service: dict[str, Any]) -> str | None:
    """The script of a ``sh -c SCRIPT`` command, else None."""
    argv = command_of(service)
    return argv[2] if argv[:2] == ["sh", "-c"] and len(argv) > 2 else None


def server_argv(service: dict[str, Any], program: str) -> list[str]:
    """The argv ``program`` runs with: the command itself, or the script's ``exec program``."""
    script = shell_script(service)
    if script is None:
        return command_of(service)
    for statement in script.split(";"):
        words = statement.split()
        if words[:2] == ["exec", program]:
            return shlex.split(statement)[1:]
    return []


def tmpfs_targets(service: dict[str, Any]) -> set[str]:
    tmpfs = service.get("tmpfs", [])
    entries = [tmpfs] if isinstance(tmpfs, str) else tmpfs
    targets = {entry.split(":")[0] for entry in entries}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict) and entry.get("type") == "tmpfs":
            targets.add(entry["target"])
    return targets


def readme_urls() -> dict[str, list[str]]:
    """The URLs secrets/README.md writes into secret files, by file, the password as ``pw``.

    The recipe writes them as ``printf 'scheme://...%s...\\n' "$(cat ...)" > secrets/NAME``.
    """
    text = (SECRETS_DIR / "README.md").read_text(encoding="utf-8")
    urls: dict[str, list[str]] = {}
    pattern = r"printf '([a-z+]+://[^'\\]*)\\n'[^>]*>\s*secrets/([\w.-]+)"
    for template, file_name in re.findall(pattern, text):
        urls.setdefault(file_name, []).append(template.replace("%s", "pw"))
    return urls


def secret_file_name(compose: dict[str, Any], secret: str) -> str:
    return Path(compose["secrets"][secret]["file"]).name


def declared_variables() -> set[str]:
    """Every variable the README documents (the Settings model's), *_FILE twins included."""
    return variables()


# --- the services -------------------------------------------------------------------------------


def test_the_compose_file_defines_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    # Given docker-compose.yml, parsed as plain YAML (the merge keys of the anchors resolved)
    # Then every service of the stack is there, and exactly the app services use our image
    missing = set(INFRA_SERVICES + APP_SERVICES) - set(services)
    assert not missing, f"services missing: {sorted(missing)}"
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(APP_SERVICES)


def test_influxdb_is_core_on_a_file_object_store_with_auth_on(
    services: dict[str, dict[str, Any]],
) -> None:
    influxdb = services["influxdb"]
    assert influxdb["image"] == "influxdb:3-core"

    argv = command_of(influxdb)
    assert argv[:2] == ["influxdb3", "serve"]
    assert option(argv, "--node-id")
    assert option(argv, "--object-store") == "file"
    data_dir = option(argv, "--data-dir")
    assert data_dir, "the file object store needs --data-dir"
    assert any(
        data_dir == target or data_dir.startswith(target.rstrip("/") + "/")
        for target in volume_targets(influxdb)
    ), f"--data-dir {data_dir} is not on a volume: the databases would die with the container"
    assert "--without-auth" not in argv

    # The admin token comes from a mounted secret file, not from a human at a prompt
    token_file = option(argv, "--admin-token-file")
    assert token_file in mounted_secrets(influxdb).values()

    # /health needs a token while auth is on, unless authz is disabled for it
    check = " ".join(influxdb["healthcheck"]["test"])
    assert "/health" in check
    disabled = (option(argv, "--disable-authz") or "").split(",")
    assert "Authorization" in check or "health" in disabled


def test_redis_keeps_queued_messages_across_a_restart(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    argv = server_argv(redis, "redis-server")
    assert option(argv, "--appendonly") == "yes"
    assert "/data" in volume_targets(redis), "the append-only file must live on a volume"


def test_rabbitmq_is_the_durable_broker_behind_a_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]
    assert rabbitmq["image"].startswith("rabbitmq:")
    # Its queues live under the node name (rabbit@<hostname>), on a volume: a fixed hostname
    # finds them again when the container is re-created
    assert rabbitmq["hostname"]
    assert "/var/lib/rabbitmq" in volume_targets(rabbitmq)
    assert "check_port_connectivity" in rabbitmq["healthcheck"]["test"]

    # Its password comes from its secret file, and it refuses to start without one
    script = shell_script(rabbitmq) or ""
    assert 'RABBITMQ_DEFAULT_PASS="$$(cat /run/secrets/rabbitmq_password)"' in script
    assert "test -s /run/secrets/rabbitmq_password ||" in script
    assert server_argv(rabbitmq, "docker-entrypoint.sh") == [
        "docker-entrypoint.sh",
        "rabbitmq-server",
    ]

    # The apps' broker URL is a file; both URLs secrets/README.md writes into it (Redis by
    # default, RabbitMQ for the profile; the compose file's header repeats the second) are
    # brokers the settings accept, naming the services of this file
    urls = readme_urls()["celery_broker_url"]
    brokers = {Settings.from_env({"CELERY_BROKER_URL": url}).broker: url for url in urls}
    assert set(brokers) == {"redis", "rabbitmq"}, urls
    env = environment_of(rabbitmq)
    user, vhost = env["RABBITMQ_DEFAULT_USER"], env["RABBITMQ_DEFAULT_VHOST"]
    assert brokers["rabbitmq"] == f"amqp://{user}:pw@rabbitmq:5672/{vhost}"
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nservices:", 1)[0]
    assert "COMPOSE_PROFILES=rabbitmq" in header
    assert f"amqp://{user}:%s@rabbitmq:5672/{vhost}" in header
    assert "secrets/celery_broker_url" in header


def test_exactly_one_beat_keeps_its_schedule_on_a_volume(
    services: dict[str, dict[str, Any]],
) -> None:
    beat = services["beat"]
    assert beat["deploy"]["replicas"] == 1
    schedule = option(command_of(beat), "--schedule")
    assert schedule, "beat must be told where its schedule file lives"
    assert str(Path(schedule).parent) in volume_targets(beat)


def test_api_health_check_uses_python_because_slim_has_no_curl(
    services: dict[str, dict[str, Any]],
) -> None:
    check = services["api"]["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL")
    assert "python" in check[1]
    assert "/healthz" in " ".join(check)
    assert "curl" not in " ".join(check)


def test_services_wait_for_what_they_need(services: dict[str, dict[str, Any]]) -> None:
    for name, expected in EXPECTED_DEPENDENCIES.items():
        depends_on = services[name].get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions (long form)"
        actual = {
            dependency: settings.get("condition") for dependency, settings in depends_on.items()
        }
        for dependency, condition in expected.items():
            assert actual.get(dependency) == condition, (
                f"{name} must wait for {dependency} to be {condition}, got {actual.get(dependency)}"
            )

    # And every condition can be met: a healthy service has a health check, a completed one
    # is a one-shot that is not restarted, and one behind a profile is not required (or the
    # default stack, without the profile, would not start)
    for name, service in services.items():
        for dependency, settings in (service.get("depends_on") or {}).items():
            condition = settings.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name}: {dependency} never healthy"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is a one-shot"
            if services[dependency].get("profiles"):
                assert settings.get("required") is False, f"{name} requires {dependency}"


# --- the app processes --------------------------------------------------------------------------


def test_app_services_set_only_variables_the_code_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given the declared variable names (Settings' own and the Flower wrapper's; not copied here)
    allowed = declared_variables()
    assert allowed, "found no variables declared in worker/settings.py"

    # Then no app service sets a variable that nothing reads (a typo would be silently ignored)
    for name in APP_SERVICES:
        unknown = set(environment_of(services[name])) - allowed
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_command_runs_real_code(name: str) -> None:
    argv = command_of(load_compose()["services"][name])
    assert argv, f"{name} has no command"

    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: no module {module}"
        if spec.submodule_search_locations is not None:
            assert importlib.util.find_spec(f"{module}.__main__") is not None, (
                f"{name}: package {module} has no __main__, `python -m {module}` cannot run"
            )
    elif argv[0] == "celery":
        app_module = option(argv, "-A") or option(argv, "--app")
        assert app_module, f"{name}: celery without -A"
        app = getattr(importlib.import_module(app_module), "app", None)
        assert isinstance(app, Celery), f"{name}: {app_module} has no Celery `app`"
        assert {"worker", "beat"} & set(argv), f"{name}: which celery program?"
    elif argv[:3] == ["alembic", "upgrade", "head"]:
        scripts = alembic_script_location()
        assert (scripts / "env.py").is_file()
        assert any((scripts / "versions").glob("*.py")), "no migration to upgrade to"
    else:
        pytest.fail(f"{name}: this test does not know how to check {argv}")


def alembic_script_location() -> Path:
    ini = ROOT / "alembic.ini"
    assert ini.is_file(), "alembic upgrade head needs alembic.ini"
    config = configparser.ConfigParser(defaults={"here": str(ROOT)})
    config.read(ini, encoding="utf-8")
    return Path(config["alembic"]["script_location"])


# --- secrets ------------------------------------------------------------------------------------


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    declared = set(compose.get("secrets", {}))

    for name, service in compose["services"].items():
        for key, value in environment_of(service).items():
            # Passwords, tokens and credentials only as files, mounted from secrets
            if CREDENTIAL_NAME.search(key):
                assert key.endswith("_FILE"), f"{name}: {key} would put a secret in the environment"
                assert value and value.startswith(SECRETS_MOUNT), f"{name}: {key}={value}"
            # Nor from the operator's environment: ${POSTGRES_PASSWORD}, ${FLOWER_BASIC_AUTH}...
            for variable in INTERPOLATION.findall(value or ""):
                assert not CREDENTIAL_NAME.search(variable), (
                    f"{name}: {key} takes the secret ${{{variable}}} from the environment"
                )
            # Nor inside a URL (a URL with a password is a secret file: DATABASE_URL_FILE, ...)
            if value and "://" in value:
                authority = value.split("://", 1)[1].split("/", 1)[0]
                assert "@" not in authority, f"{name}: {key} carries credentials in its URL"

    # Nowhere else in the file either (commands, health checks): ${...} never names a secret
    for text in strings_in(compose):
        for variable in INTERPOLATION.findall(text):
            assert not CREDENTIAL_NAME.search(variable), f"${{{variable}}} in {text!r}"

    # Any other mention of a token is a reference to a secret file, never a token
    for text in strings_in(compose):
        remainder = SECRET_FILE_REFERENCE.sub("", text).replace("--admin-token-file", "")
        for secret in declared:
            remainder = re.sub(rf"\b{re.escape(secret)}\b", "", remainder)
        assert "token" not in remainder.lower(), f"looks like a literal token: {text!r}"


def test_secret_files_are_mounted_where_they_are_read(compose: dict[str, Any]) -> None:
    declared = compose.get("secrets", {})
    assert {"influxdb_token", "operator_token"} <= set(declared)
    for secret in declared.values():
        assert Path(secret["file"]).parts[0] == "secrets", "secret files live in ./secrets"

    # Every /run/secrets path a service uses (a *_FILE variable, a server flag, a health
    # check) is a secret that service mounts, or the process fails at start-up
    for name, service in compose["services"].items():
        mounted = mounted_secrets(service)
        assert set(mounted) <= set(declared), f"{name} mounts an undeclared secret"
        for text in strings_in({k: v for k, v in service.items() if k != "secrets"}):
            for path in re.findall(r"/run/secrets/[\w.-]+", text):
                assert path in mounted.values(), f"{name} reads {path} but does not mount it"


def test_each_service_mounts_exactly_the_secrets_it_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(EXPECTED_SECRETS) == set(services), "a service without its expected secrets"
    for name, expected in EXPECTED_SECRETS.items():
        mounted = mounted_secrets(services[name])
        assert set(mounted) == expected, (
            f"{name} mounts {sorted(mounted)}, needs {sorted(expected)}"
        )

        # Every *_FILE variable names one of them; every mounted secret is read by something
        files = {
            key: value
            for key, value in environment_of(services[name]).items()
            if key.endswith("_FILE")
        }
        for key, value in files.items():
            assert value in mounted.values(), f"{name}: {key}={value} is not a mounted secret"
        others = " ".join(strings_in({k: v for k, v in services[name].items() if k != "secrets"}))
        for secret, path in mounted.items():
            assert path in others, f"{name} mounts {secret} but nothing reads {path}"

    # The app reads its URLs from files: the plain variables would put passwords in the
    # environment, and the settings refuse both at once
    for name in APP_SERVICES:
        env = environment_of(services[name])
        assert not {"DATABASE_URL", "CELERY_BROKER_URL", "FLOWER_BASIC_AUTH"} & set(env), name


def test_flower_gets_no_database_url(services: dict[str, dict[str, Any]]) -> None:
    # Flower (python -m worker flower, then celery -A worker flower) reads the broker only;
    # importing the Celery app reads DATABASE_URL's default but never connects
    flower = services["flower"]
    env = environment_of(flower)
    assert "DATABASE_URL" not in env
    assert "DATABASE_URL_FILE" not in env
    assert "database_url" not in mounted_secrets(flower)
    assert env.get("CELERY_BROKER_URL_FILE") == SECRETS_MOUNT + "celery_broker_url"
    assert env.get("FLOWER_BASIC_AUTH_FILE") == SECRETS_MOUNT + "flower_basic_auth"


def test_secret_files_are_explained_and_never_committed(compose: dict[str, Any]) -> None:
    # secrets/ is ignored by design, so the files cannot be checked; their recipe can
    readme = SECRETS_DIR / "README.md"
    assert readme.is_file(), "secrets/README.md must explain how to create the secret files"
    text = readme.read_text(encoding="utf-8")
    for secret in compose["secrets"].values():
        assert Path(secret["file"]).name in text, f"secrets/README.md omits {secret['file']}"

    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "secrets/*" in ignored
    assert "!secrets/README.md" in ignored


# --- least privilege ----------------------------------------------------------------------------


def test_the_app_connects_to_postgres_as_its_own_role_not_the_superuser(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    database = environment_of(postgres)["POSTGRES_DB"]

    # Given the init script the postgres image runs on an empty volume, which makes the role
    init_targets = {
        entry.split(":")[0]: entry.split(":")[1]
        for entry in postgres.get("volumes", [])
        if isinstance(entry, str)
    }
    assert init_targets.get("./deploy/postgres-init") == "/docker-entrypoint-initdb.d"
    script = (POSTGRES_INIT_DIR / "10-app-role.sh").read_text(encoding="utf-8")
    assert f"${{APP_DB_USER:-{APP_ROLE}}}" in script
    assert "NOSUPERUSER" in script and "OWNER TO" in script
    # The superuser's own password comes from a file too (the image's POSTGRES_PASSWORD_FILE)
    assert environment_of(postgres).get("POSTGRES_PASSWORD_FILE") == (
        SECRETS_MOUNT + "postgres_password"
    )
    assert environment_of(postgres).get("APP_DB_PASSWORD_FILE") == (
        SECRETS_MOUNT + "postgres_app_password"
    )

    # Then every app service that uses the database reads the URL secrets/README.md writes,
    # which names that role (never `postgres`), on the postgres service and its database
    urls = readme_urls().get(secret_file_name(compose, "database_url"), [])
    assert len(urls) == 1, f"secrets/README.md must write the database URL once, found {urls}"
    url = make_url(Settings.from_env({"DATABASE_URL": urls[0]}).database_url)
    assert (url.username, url.host, url.port, url.database) == (
        APP_ROLE,
        "postgres",
        5432,
        database,
    )
    users = set()
    for name in APP_SERVICES:
        env = environment_of(services[name])
        if "DATABASE_URL_FILE" in env:
            assert env["DATABASE_URL_FILE"] == SECRETS_MOUNT + "database_url", name
            users.add(name)
    assert users == {"migrate", "worker", "webhooks", "api"}


def test_redis_requires_a_password_and_its_health_check_authenticates(
    compose: dict[str, Any],
) -> None:
    redis = compose["services"]["redis"]
    password = SECRETS_MOUNT + "redis_password"
    assert password in mounted_secrets(redis).values()

    # The server starts from a config file written from the secret, on a tmpfs: the password
    # is never in a command line (no --requirepass, no redis-cli -a)
    script = shell_script(redis)
    assert script, "redis must start from a script that reads its password file"
    written = re.search(rf"printf 'requirepass %s\\n' \"\$\$\(cat {password}\)\" > (\S+);", script)
    assert written, f"redis does not write requirepass from {password}: {script!r}"
    config = written.group(1)
    argv = server_argv(redis, "redis-server")
    assert argv[:2] == ["redis-server", config]
    assert str(Path(config).parent) in tmpfs_targets(redis)
    assert "--requirepass" not in argv

    check = " ".join(redis["healthcheck"]["test"])
    assert f'REDISCLI_AUTH="$$(cat {password})" redis-cli ping' in check
    assert " -a " not in check and "--pass" not in check

    # And the broker URL secrets/README.md writes carries that password, for the redis service
    urls = readme_urls()[secret_file_name(compose, "celery_broker_url")]
    assert "redis://:pw@redis:6379/0" in urls


def test_every_service_drops_its_privileges(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        # No capability, none regained through setuid binaries, never privileged
        assert service.get("cap_drop") == ["ALL"], f"{name} must drop every capability"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("cap_add"), f"{name} adds capabilities back"
        assert not service.get("privileged"), name

    # Non-root from the first process (the app image and InfluxDB's set their own USER)
    for name, user in INFRA_USERS.items():
        assert services[name].get("user") == user, f"{name} must run as the image's {user} user"
    assert "user" not in services["influxdb"]
    for name in APP_SERVICES:
        assert services[name].get("user") in (None, "10001", "app"), name

    # Read-only root filesystems, with a tmpfs where the process writes outside its volumes
    for name, tmpfs in READ_ONLY_TMPFS.items():
        assert services[name].get("read_only") is True, f"{name} must run read-only"
        assert tmpfs <= tmpfs_targets(services[name]), f"{name} needs the tmpfs {sorted(tmpfs)}"


# --- the image ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    pairs = []
    for instruction in logical:
        keyword, _, arguments = instruction.partition(" ")
        pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def copied_paths() -> set[str]:
    copied = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        for source in words[:-1]:
            copied.add(source.removeprefix("./").rstrip("/") or ".")
    return copied


def local_top_level_names() -> set[str]:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    modules = {path.stem for path in ROOT.glob("*.py")}
    return packages | modules


def local_imports(path: Path, local: set[str]) -> set[str]:
    """Top-level repository modules that ``path`` imports or names in config_from_object()."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "config_from_object"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found & local


def paths_the_commands_need(services: dict[str, dict[str, Any]]) -> set[str]:
    """Repository paths the app commands need at run time, following local imports."""
    local = local_top_level_names()
    needed: set[str] = {"requirements.txt"}
    pending: set[str] = set()
    for name in APP_SERVICES:
        argv = command_of(services[name])
        if argv[:2] == ["python", "-m"]:
            pending.add(argv[2].split(".")[0])
        elif argv[0] == "celery":
            pending.add((option(argv, "-A") or option(argv, "--app") or "").split(".")[0])
        elif argv[0] == "alembic":
            scripts = alembic_script_location().relative_to(ROOT)
            needed.update({"alembic.ini", str(scripts)})
            pending.update(local_imports(ROOT / scripts / "env.py", local))

    seen: set[str] = set()
    while pending:
        module = pending.pop()
        seen.add(module)
        package = ROOT / module
        files = sorted(package.rglob("*.py")) if package.is_dir() else [ROOT / f"{module}.py"]
        needed.add(module if package.is_dir() else f"{module}.py")
        for file in files:
            pending.update(local_imports(file, local) - seen)
    return needed


def test_the_image_contains_everything_the_commands_run(
    services: dict[str, dict[str, Any]],
) -> None:
    copied = copied_paths()
    if "." in copied:
        return  # the whole context (minus .dockerignore) is copied
    missing = paths_the_commands_need(services) - copied
    assert not missing, f"the Dockerfile does not COPY {sorted(missing)}"


def test_the_image_runs_unprivileged_and_holds_no_secret() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert ("WORKDIR", "/app") in instructions
    assert any(
        keyword == "RUN" and "pip install --no-cache-dir -r requirements.txt" in arguments
        for keyword, arguments in instructions
    )

    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")

    for keyword, arguments in instructions:
        if keyword in ("ENV", "ARG"):
            assert not re.search("TOKEN|PASSWORD|SECRET", arguments, re.IGNORECASE), arguments

    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for entry in (".venv", ".git", "tests", "secrets"):
        assert entry in ignored, f".dockerignore must exclude {entry}"


def test_webhooks_have_a_worker_of_their_own_and_the_worker_never_takes_them(
    services: dict[str, dict[str, Any]],
) -> None:
    # The webhooks service consumes the webhooks queue only, and reads the endpoints file
    hooks = command_of(services["webhooks"])
    assert (option(hooks, "-Q") or option(hooks, "--queues")) == WEBHOOKS_QUEUE
    assert environment_of(services["webhooks"])["WEBHOOKS_FILE"] == SECRETS_MOUNT + "webhooks"
    # The provisioning worker consumes its default queues (celeryconfig.task_queues, which
    # leave webhooks out) or a list without it; nothing else reads the endpoints file
    worker = command_of(services["worker"])
    queues = option(worker, "-Q") or option(worker, "--queues")
    assert queues is None or WEBHOOKS_QUEUE not in queues.split(",")
    assert WEBHOOKS_QUEUE not in ALL_QUEUES
    for name, service in services.items():
        if name != "webhooks":
            assert "WEBHOOKS_FILE" not in environment_of(service), name
