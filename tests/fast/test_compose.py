"""The deployment files, checked without a Docker engine.

No engine runs on the test machines, so ``docker compose up`` cannot be tried here. These tests
hold ``docker-compose.yml`` and the ``Dockerfile`` to everything that can be known statically:
the services exist and wait for what they need, every app command runs code that is really in
the repository and really in the image, every variable set is one the code reads, and no secret
is written down.
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

from worker.settings import Settings
from worker.settings_table import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRETS_DIR = ROOT / "secrets"

INFRA_SERVICES = ("postgres", "redis", "rabbitmq", "influxdb")
APP_SERVICES = ("migrate", "worker", "beat", "flower", "api")
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

# ${NAME:?message}: Compose refuses to run while NAME is unset, so nothing starts unguarded.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}")
# ${NAME:-}: empty when unset. Only for a service behind a profile, which Compose interpolates
# even when the profile is off (a :? there would stop the default stack); its command must
# then refuse to start without the value.
OPTIONAL_VARIABLE = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:-\}")
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


def declared_variables() -> set[str]:
    """Every variable declared in worker/settings_table.py, *_FILE twins included."""
    return {s.variable for s in SETTINGS} | {s.file_variable for s in SETTINGS if s.file_variable}


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
    argv = command_of(redis)
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

    # The apps' broker is Redis by default and CELERY_BROKER_URL when set, and both the default
    # and the RabbitMQ URL the file's header gives are brokers the settings accept
    url = environment_of(services["worker"])["CELERY_BROKER_URL"] or ""
    default = re.fullmatch(r"\$\{CELERY_BROKER_URL:-(.+)\}", url)
    assert default, f"CELERY_BROKER_URL must be overridable, got {url!r}"
    assert Settings.from_env({"CELERY_BROKER_URL": default.group(1)}).broker == "redis"
    env = environment_of(rabbitmq)
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nservices:", 1)[0]
    documented = re.search(r"CELERY_BROKER_URL=(amqp://\S+)", header)
    assert documented, "the header must say which CELERY_BROKER_URL selects RabbitMQ"
    amqp = documented.group(1).replace("${RABBITMQ_PASSWORD}", "pw")
    assert Settings.from_env({"CELERY_BROKER_URL": amqp}).broker == "rabbitmq"
    user, vhost = env["RABBITMQ_DEFAULT_USER"], env["RABBITMQ_DEFAULT_VHOST"]
    assert amqp == f"amqp://{user}:pw@rabbitmq:5672/{vhost}"


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
    assert allowed, "found no variables declared in worker/settings_table.py"

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
            # Tokens only as files, mounted from secrets
            if "TOKEN" in key:
                assert key.endswith("_FILE"), f"{name}: {key} would put a token in the environment"
                assert value and value.startswith(SECRETS_MOUNT), f"{name}: {key}={value}"
            # Passwords only from the operator's environment, and required
            elif re.search("PASSWORD|SECRET|AUTH|_PASS$", key):
                if service.get("profiles") and value and OPTIONAL_VARIABLE.fullmatch(value):
                    guard = f'test -n "$${key}"'
                    assert guard in " ".join(command_of(service)), (
                        f"{name}: {key} may be empty, so its command must refuse it ({guard})"
                    )
                    continue
                assert value and REQUIRED_VARIABLE.fullmatch(value), (
                    f"{name}: {key} must be ${{VAR:?message}}, not a value or a default"
                )
            # A password inside a URL too
            if value and "://" in value and "@" in value.split("://", 1)[1]:
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                password = userinfo.partition(":")[2]
                assert REQUIRED_VARIABLE.fullmatch(password), f"{name}: {key} has a password"

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
