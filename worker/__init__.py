"""tenant-provisioner worker: gives every tenant its own InfluxDB 3 database.

``celery -A worker worker`` finds the Celery application here.
"""

from worker.celery_app import app

__all__ = ["app"]
