"""Who acts: the actor an operator action is recorded with in the event log (docs/events.md).

- **HTTP routes and console pages** are mounted behind a ``require_operator`` dependency: the
  UI's own (``require_operator_admin``) or ours. What it *returns* is the operator's identity,
  and :func:`actor_of` turns it into the actor: a string as it is; a mapping's ``username``,
  ``email``, ``id`` or ``sub`` (the first one present and not None); an object's
  ``username``, ``email`` or ``id`` attribute (likewise), when it is a string or a number;
  anything else - and None, a check that returns nothing - ``unidentified``. Never ``str()`` of
  an unknown object: FastAPI's bearer credentials print their token, a claims dict its secrets.
- **Our bearer token** (``api_hooks.router.bearer_token_auth``) returns ``operator-token``; a
  **console session** returns the identity it signed in as (``operator-token`` for the
  standalone app's sign-in with the token).
- **The CLI** is ``cli:<OS user>``; a **hook called from Python** takes ``actor=`` (default
  ``python``).
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's annotations, and
# they name the ``require_operator`` it wraps.
import getpass
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request

OPERATOR_TOKEN_ACTOR = "operator-token"  # noqa: S105 - a name for whoever holds the token
UNIDENTIFIED = "unidentified"  # a require_operator that returned nothing
_STATE_KEY = "tenant_provisioner_actor"
_KEYS = ("username", "email", "id", "sub")
_ATTRIBUTES = ("username", "email", "id")


def actor_of(identity: object) -> str:
    """The actor recorded for what ``require_operator`` returned (see the module docstring)."""
    if identity is None:
        return UNIDENTIFIED
    if isinstance(identity, str):
        return identity or UNIDENTIFIED
    if isinstance(identity, int) and not isinstance(identity, bool):
        return str(identity)  # a user id
    if isinstance(identity, Mapping):
        values = [identity.get(key) for key in _KEYS]
    else:
        values = [getattr(identity, attribute, None) for attribute in _ATTRIBUTES]
    for value in values:
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return UNIDENTIFIED


def identified(require_operator: Callable[..., Any]) -> Callable[..., None]:
    """A dependency that runs ``require_operator`` (its refusals unchanged) and keeps the
    actor of what it returned for the request (:func:`actor_from`)."""

    def identify_operator(
        request: Request, operator: Annotated[Any, Depends(require_operator)]
    ) -> None:
        setattr(request.state, _STATE_KEY, actor_of(operator))

    return identify_operator


def actor_from(request: Request) -> str:
    """The actor :func:`identified` found for this request."""
    return str(getattr(request.state, _STATE_KEY, UNIDENTIFIED))


def cli_actor() -> str:
    """``cli:<OS user>``: who runs tenantctl."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container's arbitrary user)
        user = f"uid{os.getuid()}"
    return f"cli:{user}"
