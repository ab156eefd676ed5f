# One image for every tenant-provisioner process: Celery worker, beat, Flower, the operator API
# and the one-shot migration. docker-compose.yml picks the process with `command:`.
# No secret is baked in: tokens arrive at run time as files under /run/secrets (*_FILE variables).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid. The code stays root-owned (read-only to the app); the only
# writable path is the beat schedule directory, which a fresh named volume inherits.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/beat \
    && chown app:app /var/lib/beat

WORKDIR /app

# Dependencies first, so a code change does not re-install them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY alembic.ini celeryconfig.py pyproject.toml ./
COPY migrations/ ./migrations/
COPY worker/ ./worker/
COPY api_hooks/ ./api_hooks/
COPY locations_client/ ./locations_client/
COPY influxdb3_standin/ ./influxdb3_standin/
# The operator CLI as a command: `docker compose exec worker tenantctl status TENANT`.
RUN pip install --no-cache-dir --no-deps .

USER app

# 8000: operator API (python -m api_hooks); 5555: Flower.
EXPOSE 8000 5555
