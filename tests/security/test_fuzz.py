"""A fuzzing pass over every route of the committed OpenAPI document, against a real API process.

Schemathesis (its own test builder: the document's examples, then its coverage phase - boundary
values, each parameter and field made invalid, methods a path does not take - then generated
requests, valid and invalid) sends requests from ``docs/openapi.json`` to each operation with
the bearer token the route takes, then again with an existing tenant on the tenant's routes;
then valid requests without a credential, with a wrong one or another scheme; then requests the
document does not describe (throttled guessing, unknown paths and methods, a 10 MB body).

Every answer must come within ``MAX_ANSWER_SECONDS``, never be a 5xx, carry the security
headers (``api_hooks.headers``), and conform to the document where Schemathesis can tell
(status code, content type, headers, body schema; invalid requests refused). Problems are
collected, not raised, so one run lists them all, each with a curl command (less the route's
bearer token). Generation is derandomized: every run sends the same requests.

Budget: about a minute on the 2-core reference machine (``EXAMPLES`` per operation).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from requests.adapters import HTTPAdapter
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)
from schemathesis.generation.overrides import Override
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_hooks.headers import SECURITY_HEADERS
from tests.conftest import ROOT
from tests.security.conftest import FuzzedAPI

SCHEMA_PATH = ROOT / "docs" / "openapi.json"
MAX_ANSWER_SECONDS = 1.0
TRANSPORT_TIMEOUT = 10.0  # a hung answer fails the pass, it does not hang it
# Generated requests per operation (derandomized: the same ones on every run), on top of the
# examples and coverage phases' (a few dozen each).
EXAMPLES = 200
EXISTING_EXAMPLES = 40  # per operation on a tenant's path, with an existing tenant
UNAUTHENTICATED_EXAMPLES = 3
CHECKS = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ],
    GenerationMode.NEGATIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ],
}
# What a wrong credential may look like on the wire (None: no Authorization header at all).
WRONG_CREDENTIALS = [None, "Bearer wrong-token-of-the-right-length-0000000", "Basic b3A6b3A="]


@dataclass
class Findings:
    """What the pass saw: problems (each with the request that caused it) and statistics."""

    problems: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    slowest: tuple[float, str] = (0.0, "")

    def add(self, where: str, problem: str, case: Case | None = None) -> None:
        # The curl command leaves the route's bearer token out (the run's own, random).
        curl = f"\n    {case.as_curl_command()}" if case is not None else ""
        if len(self.problems) < 50:
            self.problems.append(f"{where}: {problem}{curl}")

    def timed(self, where: str, seconds: float) -> None:
        self.slowest = max(self.slowest, (seconds, where))

    def summary(self) -> str:
        seconds, where = self.slowest
        total = sum(self.answers.values())
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.answers.items()))
        return f"{total} requests ({statuses}); slowest {seconds * 1000:.0f} ms ({where})"


class SourceAddress(HTTPAdapter):
    """Connections from a loopback address of our choosing (127.0.0.0/8 is all loopback), so
    the refused credentials of one client never throttle another (``api_hooks.throttle``)."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_from(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddress(address))
    return session


_addresses = count(2)


def fresh_client() -> requests.Session:
    """A client at a loopback address no other request of the run used (127.0.0.2 on)."""
    n = next(_addresses)
    return client_from(f"127.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")


def token_for(api: FuzzedAPI, path: str) -> str | None:
    """The bearer the route takes: /metrics the operator token (METRICS_TOKEN unset)."""
    if path.startswith("/locations"):
        return api.locations_token
    if path.startswith("/operator/") or path == "/metrics":
        return api.operator_token
    return None  # /healthz


Answer = requests.Response | schemathesis.Response


def header(response: Answer, name: str) -> str | None:
    """A header of a requests answer or of Schemathesis' (lowercase names, lists of values)."""
    if isinstance(response, requests.Response):
        return response.headers.get(name)
    values = response.headers.get(name.lower())
    return ", ".join(values) if values else None


def header_problems(response: Answer) -> list[str]:
    """The security headers the answer lacks or has with another value."""
    return [
        f"header {name}: {header(response, name)!r}, expected {value!r}"
        for name, value in SECURITY_HEADERS.items()
        if header(response, name) != value
    ]


def send(
    findings: Findings,
    where: str,
    request: Callable[[], Answer],
    case: Case | None = None,
) -> Answer | None:
    """Send, time and check what every answer must be: prompt, no 5xx, security headers."""
    started = time.perf_counter()
    try:
        response = request()
    except requests.RequestException as exc:
        findings.add(where, f"no answer: {type(exc).__name__}: {exc}", case)
        return None
    seconds = time.perf_counter() - started
    findings.answers[str(response.status_code)] += 1
    findings.timed(where, seconds)
    if seconds >= MAX_ANSWER_SECONDS:
        findings.add(where, f"answered {response.status_code} after {seconds:.2f} s", case)
    if response.status_code >= 500:
        findings.add(where, f"{response.status_code}: {response.content[:300]!r}", case)
    for problem in header_problems(response):
        findings.add(where, f"{response.status_code} {problem}", case)
    return response


# Explicit (no schemathesis.toml is looked up). No generated Authorization header: each route
# gets its bearer from us; requests without one are the next test's, from addresses of their own.
CONFIG = {"generation": {"with-security-parameters": False, "mode": "all"}}


def describe(failure: BaseException) -> str:
    """What a failed check says (each of a group's)."""
    inner = failure.exceptions if isinstance(failure, BaseExceptionGroup) else [failure]
    return "; ".join(f"{type(e).__name__}: {e}".replace("\n", " ") for e in inner)


def operations() -> Iterator[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_path(
        SCHEMA_PATH, config=schemathesis.Config.from_dict(CONFIG)
    )
    for result in schema.get_all_operations():
        yield result.ok()


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,  # the same requests on every run: CI is reproducible
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # problems are collected, nothing to shrink
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def fuzz_operation(
    api: FuzzedAPI,
    operation: schemathesis.APIOperation,
    session: requests.Session,
    seen: Findings,
    examples: int,
    path_parameters: dict[str, str] | None = None,
) -> None:
    """Schemathesis' phases on ``operation``, with its bearer token: the document's examples,
    coverage (boundary values, each parameter and field made invalid, other methods) and
    ``examples`` generated requests, valid and invalid."""
    token = token_for(api, operation.path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    where = f"{operation.label}{' [existing tenant]' if path_parameters else ''}"

    def fuzz(case: Case) -> None:
        def call() -> schemathesis.Response:
            return case.call(
                base_url=api.url,
                session=session,
                headers=headers,
                timeout=TRANSPORT_TIMEOUT,
                allow_redirects=False,
            )

        label = f"{where} [{case.meta.phase.name.value}, {case.meta.generation.mode.value}]"
        response = send(seen, label, call, case)
        if response is None:
            return
        # The answer conforms to the document wherever Schemathesis can tell
        checks = CHECKS[case.meta.generation.mode]
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as failure:
            seen.add(label, describe(failure), case)

    config = HypothesisTestConfig(
        project=operation.schema.config,
        modes=list(HypothesisTestMode),  # examples, coverage, fuzzing
        settings=fuzz_settings(examples),
        override=Override(path_parameters=path_parameters or {}),
    )
    create_test(operation=operation, test_func=fuzz, config=config)()


def refuse_operation(api: FuzzedAPI, operation: schemathesis.APIOperation, seen: Findings) -> None:
    """Send valid requests to ``operation`` without the credential, with a wrong one or
    another scheme, each from an address of its own (a client that keeps failing is
    throttled: 429); each must be the documented 401 that asks for a bearer."""
    where = f"{operation.label} [unauthenticated]"

    @fuzz_settings(UNAUTHENTICATED_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def refuse(case: Case) -> None:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        for credential in WRONG_CREDENTIALS:
            headers = {"Authorization": credential} if credential else {}
            client = fresh_client()

            def call(
                client: requests.Session = client, headers: dict[str, str] = headers
            ) -> schemathesis.Response:
                return case.call(
                    base_url=api.url,
                    session=client,
                    headers=headers,
                    timeout=TRANSPORT_TIMEOUT,
                    allow_redirects=False,
                )

            response = send(seen, where, call, case)
            if response is None:
                continue
            if response.status_code != 401:
                seen.add(where, f"{credential!r}: {response.status_code}, not 401", case)
            elif header(response, "WWW-Authenticate") != "Bearer":
                seen.add(where, f"401 without WWW-Authenticate: Bearer ({credential!r})", case)
            try:
                case.validate_response(response, checks=CHECKS[GenerationMode.POSITIVE])
            except (Exception, BaseExceptionGroup) as failure:
                seen.add(where, describe(failure), case)

    refuse()


def create_tenant(api: FuzzedAPI, session: requests.Session, prefix: str) -> str:
    """A tenant of the API's database (pending: no worker provisions it); its id."""
    tenant_id = f"{prefix}-{next(_tenants)}"
    created = session.post(
        f"{api.url}/operator/tenants",
        json={"tenant_id": tenant_id, "name": "fuzzed"},
        headers={"Authorization": f"Bearer {api.operator_token}"},
        timeout=TRANSPORT_TIMEOUT,
    )
    assert created.status_code == 201, created.text
    return tenant_id


_tenants = count()


def test_every_route_fuzzed_with_its_credential(
    fuzzed_api: FuzzedAPI, report: Callable[[str], None]
) -> None:
    # Given the API on a database and a broker of the fuzz's own, and every operation of the
    # committed document
    seen = Findings()
    session = client_from("127.0.0.1")
    ops = list(operations())
    assert {op.path for op in ops} >= {"/operator/tenants", "/locations", "/metrics", "/healthz"}
    started = time.perf_counter()

    # When Schemathesis sends its requests, valid and invalid, with the bearer each route takes
    for operation in ops:
        fuzz_operation(fuzzed_api, operation, session, seen, EXAMPLES)

    # And valid requests for a tenant that exists (random ids are nearly always unknown: 404),
    # one tenant per operation, so a DELETE does not change what the others see
    for operation in ops:
        if "{tenant_id}" in operation.path:
            tenant_id = create_tenant(fuzzed_api, session, f"fuzz-{operation.method}-{len(ops)}")
            known = {"tenant_id": tenant_id}
            fuzz_operation(fuzzed_api, operation, session, seen, EXISTING_EXAMPLES, known)

    # Then none was a 5xx, slow, without the security headers or off the document
    report(f"fuzz with credentials: {seen.summary()} in {time.perf_counter() - started:.1f} s")
    assert not seen.problems, "\n".join(seen.problems)
    # (and the pass got past authentication to the routes' own answers)
    assert {"200", "201", "202", "404", "422"} <= set(seen.answers), seen.answers
    assert not {"401", "429"} & set(seen.answers), seen.answers


def test_every_protected_route_refuses_a_missing_or_wrong_credential(
    fuzzed_api: FuzzedAPI, report: Callable[[str], None]
) -> None:
    # Given every operation behind a bearer token
    seen = Findings()
    protected = [op for op in operations() if token_for(fuzzed_api, op.path)]
    assert len(protected) >= 8
    started = time.perf_counter()

    # When valid requests come without the credential, with a wrong one or another scheme
    for operation in protected:
        refuse_operation(fuzzed_api, operation, seen)

    # Then each is a prompt 401 asking for a bearer, as documented, with the headers
    report(f"without credentials: {seen.summary()} in {time.perf_counter() - started:.1f} s")
    assert not seen.problems, "\n".join(seen.problems)


def test_throttled_unknown_and_unrouted_answers_carry_the_headers(fuzzed_api: FuzzedAPI) -> None:
    # Answers the document does not describe: throttled credentials, unknown paths, methods a
    # path does not take, a body too large. They carry the headers and are no 5xx all the same.
    seen = Findings()
    url = fuzzed_api.url

    # A client that keeps sending a wrong token is throttled: 429 with Retry-After
    guesser = fresh_client()
    wrong = {"Authorization": "Bearer wrong-token-of-the-right-length-1111111"}
    answers = [
        send(seen, "GET /metrics (guessing)", lambda: guesser.get(f"{url}/metrics", headers=wrong))
        for _ in range(8)
    ]
    statuses = [a.status_code if a is not None else None for a in answers]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    assert answers[-1] is not None and answers[-1].headers.get("Retry-After", "").isdigit()

    # Paths and methods the document does not have
    client = fresh_client()
    document = schemathesis.openapi.from_path(SCHEMA_PATH).raw_schema
    for path, methods in document["paths"].items():
        concrete = path.replace("{tenant_id}", "fuzz-nobody")
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - {m.upper() for m in methods}:
            response = send(
                seen,
                f"{method} {concrete}",
                lambda m=method, p=concrete: client.request(
                    m, f"{url}{p}", timeout=TRANSPORT_TIMEOUT, allow_redirects=False
                ),
            )
            if response is not None and response.status_code not in (401, 404, 405):
                seen.add(f"{method} {concrete}", f"{response.status_code}, not 405")
    odd_paths = ["/nowhere", "/operator", "/operator/tenants/", "/%00", "/..%2f..%2fetc", "/" * 300]
    for path in odd_paths:
        send(seen, f"GET {path[:40]}", lambda p=path: client.get(f"{url}{p}", timeout=10))

    # A body far past any limit: refused, not read
    operator = {"Authorization": f"Bearer {fuzzed_api.operator_token}"}
    big = send(
        seen,
        "POST /operator/tenants (10 MB)",
        lambda: client_from("127.0.0.1").post(
            f"{url}/operator/tenants",
            data=b"{" + b" " * 10_000_000 + b"}",
            headers={**operator, "Content-Type": "application/json"},
            timeout=TRANSPORT_TIMEOUT,
        ),
    )
    assert big is not None and big.status_code == 413, big and big.status_code

    assert not seen.problems, "\n".join(seen.problems)
