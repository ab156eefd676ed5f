"""The two error families of provisioning, each with the reason code stored in Postgres.

Third-party exceptions (requests, HTTP statuses) are converted into these at the boundary, in
``worker.influxdb``. The task decides retry or stop from the family alone:

- ``TransientError``: the same call may succeed later; retried with capped, jittered backoff.
- ``PermanentError``: retrying the same call cannot succeed; the reason is recorded, we stop.
"""

from __future__ import annotations

import re

from celery.exceptions import SoftTimeLimitExceeded

from worker.states import Reason


class ProvisioningError(Exception):
    """Base of every error the provisioning pipeline knows how to classify."""

    reason: Reason = Reason.INTERNAL_ERROR
    # False when the request surely never reached the server (connection refused, connect
    # timeout): a create that was never sent cannot have made a database.
    request_sent: bool = True


class TransientError(ProvisioningError):
    """A failure worth retrying: the same request may succeed later."""


class PermanentError(ProvisioningError):
    """A failure that retrying the same request cannot fix; recorded, never retried."""


class InfluxDBUnreachable(TransientError):
    """The connection to InfluxDB failed (refused, reset, DNS)."""

    reason = Reason.UNREACHABLE


class InfluxDBTimeout(TransientError):
    """InfluxDB did not connect or answer within the configured timeout."""

    reason = Reason.TIMEOUT


class InfluxDBServerError(TransientError):
    """InfluxDB answered with a 5xx status (e.g. a full WAL buffer)."""

    reason = Reason.SERVER_ERROR


class InfluxDBBadResponse(TransientError):
    """InfluxDB answered a success status with a body we cannot understand."""

    reason = Reason.BAD_RESPONSE


class InvalidDatabaseName(PermanentError):
    """InfluxDB rejected the database name (400 on create)."""

    reason = Reason.INVALID_NAME


class InfluxDBUnauthorized(PermanentError):
    """InfluxDB rejected our token (401) or the Authorization header (400)."""

    reason = Reason.UNAUTHORIZED


class DatabaseLimitReached(PermanentError):
    """The server already holds its maximum number of databases (422): a capacity problem."""

    reason = Reason.DATABASE_LIMIT

    @property
    def server_limit(self) -> int | None:
        """The limit the server named ("would exceed limit of 5 databases"), if it named a
        sensible one: a nodes file may overstate it (Core's is 5, whatever the file says)."""
        named = _NAMED_LIMIT.search(str(self))
        return int(named[1]) if named and 0 < int(named[1]) < 2**31 else None


_NAMED_LIMIT = re.compile(r"exceed limit of ([0-9]{1,10}) databases")


class InfluxDBRejected(PermanentError):
    """InfluxDB refused the request with an unexpected 4xx: retrying sends the same request."""

    reason = Reason.REJECTED


def late_as_timeout(exc: Exception) -> Exception:
    """Celery's soft time limit, raised into a call to InfluxDB, as the timeout it amounts to
    (the request may have landed; ``internal_error`` would fail the tenant for good, where a
    slow server's timeout is retried and resumed); any other exception as it is."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return InfluxDBTimeout(
            "the run's soft time limit (PROVISION_SOFT_TIME_LIMIT) passed mid-call"
        )
    return exc
