# Shared by scripts/run-local, scripts/test and .ci/run: a venv with the pinned packages, and
# the local Postgres and Redis (and, for the tests, RabbitMQ) running. Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
# Some machines set PYTHONDONTWRITEBYTECODE. Then every Python this project starts (each test
# process, each Celery worker and beat a test starts) compiles our modules and re-rewrites the
# test files' asserts from source, about 2 s per pytest process. __pycache__/ is git-ignored.
unset PYTHONDONTWRITEBYTECODE

bootstrap_venv() {
  local stamp="$VENV/.requirements.sha"
  local want
  want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/pyproject.toml" \
    | sha256sum | cut -d' ' -f1)"
  if [[ ! -x "$PY" ]]; then
    echo "==> creating $VENV"
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  fi
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "==> installing pinned packages (requirements-dev.txt)"
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements-dev.txt" \
      2> >(grep -v "^WARNING: Location" >&2)
    # The operator CLI's console script (tenantctl); the code itself stays in the checkout.
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
  fi
}

ensure_services() {
  # Started with the machine; restart one only if it is down (commands from shared/services.md).
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "==> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "==> starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable" >&2; exit 1; }
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "Redis is not reachable" >&2; exit 1; }
}

amqp_port_open() {
  # The AMQP listener answers only while the RabbitMQ application runs (rabbitmqctl takes seconds).
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

ensure_rabbitmq() {
  # The broker tests and drills also run on RabbitMQ (a vhost of their own). Started with the
  # machine; start it only if it is down: the application inside a running node (a drill
  # restarts it that way), else the node itself.
  if ! amqp_port_open; then
    echo "==> starting RabbitMQ"
    rabbitmqctl -q start_app 2>/dev/null || rabbitmq-server -detached
    rabbitmqctl -q await_startup --timeout 120 || true
    for _ in $(seq 100); do amqp_port_open && break; sleep 0.2; done
  fi
  amqp_port_open || { echo "RabbitMQ is not reachable on 127.0.0.1:5672" >&2; exit 1; }
}

apt_install() {
  # Debian packages the tests need, installed once per machine when missing.
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "install $* as root (apt-get)" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null
}

ensure_faketime() {
  # The clock-skew tests run a worker and a reconciler whose clocks are off the database's.
  if compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null; then
    return
  fi
  echo "==> installing libfaketime (apt-get), for the clock-skew tests"
  apt_install libfaketime
}

ensure_browser() {
  # The console's browser tests drive Debian's Chromium through its ChromeDriver. Installed
  # once per machine (a test tool's own browser download does not work on this network).
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    return
  fi
  echo "==> installing chromium and chromium-driver (apt-get), for the browser tests"
  apt_install chromium chromium-driver
}

ensure_promtool() {
  # The alert rules in deploy/prometheus are checked and unit-tested with promtool, which
  # Debian's prometheus package ships. Installed once per machine, like the browser.
  if command -v promtool >/dev/null; then
    return
  fi
  echo "==> installing prometheus (apt-get), for promtool: the alert rules' tests"
  apt_install prometheus
}
