"""The provisioning vocabulary: states, reasons, run results and adoption modes, as named
constants plus the sets that matter. Code asks ``reason in RESUMABLE_REASONS``; it never
compares strings scattered over modules. Stored values are the enum values (plain text).
"""

from __future__ import annotations

import enum


class ProvisioningState(enum.StrEnum):
    """Where a tenant's InfluxDB database stands (``tenants.influxdb_state``); one at a time."""

    PENDING = "pending"  # owed work: waiting for (or re-queued to) a worker
    PROVISIONING = "provisioning"  # a worker is inside the InfluxDB calls now
    RETRYING = "retrying"  # the last attempt failed transiently; next at influxdb_next_attempt_at
    PROVISIONED = "provisioned"  # database created and the _init marker written
    FAILED = "failed"  # permanent error or attempts exhausted; see RESUMABLE_REASONS
    WAITING_FOR_CAPACITY = "waiting_for_capacity"  # no server has room; the reconciler places it
    DEPROVISIONING = "deprovisioning"  # deletion asked for; the row goes when the database does


STATES = tuple(s.value for s in ProvisioningState)

# Not provisioned yet and expected to be: the "oldest unprovisioned" metric watches these.
IN_PROGRESS_STATES = frozenset(
    {
        ProvisioningState.PENDING,
        ProvisioningState.PROVISIONING,
        ProvisioningState.RETRYING,
        ProvisioningState.WAITING_FOR_CAPACITY,
    }
)


class Reason(enum.StrEnum):
    """Why a tenant is where it is (``tenants.influxdb_error_reason``, attempt log ``reason``)."""

    # transient: the same call may succeed later
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    BAD_RESPONSE = "bad_response"
    INTERNAL_ERROR = "internal_error"
    # permanent: an operator must act
    INVALID_NAME = "invalid_name"
    UNAUTHORIZED = "unauthorized"
    REJECTED = "rejected"
    NAME_TAKEN = "name_taken"  # a database of that name exists and is not this tenant's
    # capacity: a state, never a retry loop
    DATABASE_LIMIT = "database_limit"
    # found by the reconciler or the worker
    DRIFT = "drift"
    WORKER_LOST = "worker_lost"
    NODE_NOT_CONFIGURED = "node_not_configured"  # the tenant's server left the nodes file

    @classmethod
    def parse(cls, value: str | None) -> Reason | None:
        """The reason stored as ``value``; None for NULL or a value this version does not know."""
        try:
            return None if value is None else cls(value)
        except ValueError:
            return None


# A tenant that failed for one of these resumes by itself, with a fresh attempt budget, once
# its server answers the reconciler again: no outage is long enough to need a person. A wrong
# token is fixed in the nodes file: the listing, made with the same token, then answers too
# (Core has only admin tokens: a token that lists can create). Others (a bug, a worker that
# keeps dying, a server answering garbage) would loop: they wait.
RESUMABLE_REASONS = frozenset(
    {Reason.UNREACHABLE, Reason.TIMEOUT, Reason.SERVER_ERROR, Reason.UNAUTHORIZED}
)


class RunResult(enum.StrEnum):
    """What one provisioning or deprovisioning run did (the task's return value)."""

    PROVISIONED = "provisioned"
    ALREADY_PROVISIONED = "already_provisioned"
    RETRYING = "retrying"
    FAILED = "failed"
    WAITING_FOR_CAPACITY = "waiting_for_capacity"
    WAITING_FOR_NODE = "waiting_for_node"  # its server is not in the nodes file: nothing done
    WAITING_FOR_CLIENTS = "waiting_for_clients"  # a deletion outwaits the location clients
    DEPROVISIONED = "deprovisioned"
    BUSY = "busy"  # another run holds the tenant
    ABSORBED = "absorbed"  # a retry is scheduled by another message: one chain per tenant
    SKIPPED = "skipped"  # nothing for this kind of run to do in the tenant's state
    NOT_FOUND = "not_found"


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended (``provisioning_attempts.outcome``)."""

    PROVISIONED = "provisioned"
    RETRYING = "retrying"
    FAILED = "failed"
    NODE_FULL = "node_full"  # 422: the tenant is placed elsewhere in the same run
    DEPROVISIONED = "deprovisioned"


class Adoption(enum.StrEnum):
    """Which existing database of the tenant's name counts as its own (``influxdb_adopt``).

    Unset (NULL), the rule is strict: only a database whose ``_init`` marker carries the row's
    incarnation, or one this incarnation created itself.
    """

    # Rows that predate this worker (the UI's table at upgrade): their database was made by the
    # inline code and has no incarnation in its marker. An unmarked one is theirs.
    UNMARKED = "unmarked"
    # An operator said so (``adopt``): whatever database of that name is on the node is theirs.
    # Cleared with the server (a 422 there, a failure that frees the slot, a wait for room).
    ANY = "any"
    # A provisioned tenant whose database was deleted behind our back (``worker.repairs``): an
    # unmarked one on its server was made since, by its writers, and is theirs. Cleared with
    # the server, as ``ANY`` is: placed as new, never located.
    REMADE = "remade"


# A tenant whose ``influxdb_node`` is only a slot an un-wait reserved, nothing of it sent there
# since (no attempt started, no create unanswered): these column values, with a node set.
# ``worker.placement.reserved_only`` reads a row by it; ``worker.store`` a deletion's SQL.
RESERVED_ONLY = {
    "influxdb_state": ProvisioningState.PENDING,
    "influxdb_attempts": 0,
    "influxdb_error_reason": Reason.DATABASE_LIMIT,
    "influxdb_create_sent_to": None,
}
