"""The webhooks file is checked strictly, each error naming the file and the entry and never
the secret; and signing is the Standard Webhooks spec's, to its published test vector and to
its own library."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from worker.webhook_config import (
    Endpoint,
    WebhookConfigError,
    configured_endpoints,
    parse_endpoints,
    read_endpoints_file,
)
from worker.webhook_sending import body_of, sign, signed_headers

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
SOURCE = "WEBHOOKS_FILE (hooks.json)"


def parse(*entries: object) -> tuple[Endpoint, ...]:
    return parse_endpoints(json.dumps(list(entries)), SOURCE)


def test_a_valid_file_gives_endpoints_whose_repr_holds_no_secret():
    (ui, ops) = parse(
        {"name": "ui", "url": "https://ui.example/hooks?x=1", "secret": SECRET},
        {
            "name": "ops-2",
            "url": "http://10.0.0.5:8080/in",
            "secret": SECRET,
            "types": ["tenant.failed", "io.tenant-provisioner.tenant.provisioned"],
        },
    )
    assert (ui.name, ui.url, ui.types) == ("ui", "https://ui.example/hooks?x=1", None)
    assert ui.keys == (b"k" * 32,)
    assert ops.types == frozenset({"tenant.failed", "tenant.provisioned"})
    assert ops.wants("io.tenant-provisioner.tenant.failed") and not ops.wants("tenant.created")
    assert ui.wants("operator.sign_in")
    for endpoint in (ui, ops):
        assert SECRET not in repr(endpoint) and "kkkk" not in repr(endpoint)
    assert parse() == ()  # an empty list: no endpoint


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "UI", "url": "https://a/h", "secret": SECRET}, "[1].name must be 1 to 63"),
        ({"name": "ui", "url": "ftp://a/h", "secret": SECRET}, "(ui).url must be an http://"),
        ({"name": "ui", "url": "https://a b/h", "secret": SECRET}, "(ui).url must name a host"),
        ({"name": "ui", "url": "https://:9/h", "secret": SECRET}, "(ui).url must name a host"),
        ({"name": "ui", "url": "https://a:port/h", "secret": SECRET}, "not a valid URL"),
        # refused by sending alone before: an empty label, one over 63 characters
        ({"name": "ui", "url": "https://hooks..example.com/in", "secret": SECRET}, "not a host"),
        ({"name": "ui", "url": f"https://{'a' * 64}.com/", "secret": SECRET}, "not a host name"),
        ({"name": "ui", "url": "https://u:pw@a/h", "secret": SECRET}, "must not carry cred"),
        ({"name": "ui", "url": "https://a/h"}, "(ui): a secret (whsec_...) or a secret_file"),
        ({"name": "ui", "url": "https://a/h", "secret": "hunter2hunter2"}, "must be whsec_"),
        ({"name": "ui", "url": "https://a/h", "secret": "whsec_c2hvcnQ="}, "is 5 bytes"),
        ({"name": "ui", "url": "https://a/h", "secret": "whsec_!!not-b64!!"}, "not valid base64"),
        (
            {"name": "ui", "url": "https://a/h", "secret": SECRET, "secret_file": "/x"},
            "either secret or secret_file",
        ),
        (
            {"name": "ui", "url": "https://a/h", "secret_file": "/nonexistent/whsec"},
            "(ui).secret_file: cannot read /nonexistent/whsec",
        ),
        (
            {"name": "ui", "url": "https://a/h", "secret": SECRET, "types": ["tenant.exploded"]},
            "unknown event type 'tenant.exploded'",
        ),
        ({"name": "ui", "url": "https://a/h", "secret": SECRET, "types": []}, "non-empty list"),
        ({"name": "ui", "url": "https://a/h", "secret": SECRET, "token": "x"}, "unknown key"),
        ("ui", "[1]: must be an object"),
    ],
)
def test_each_mistake_is_named_with_its_file_and_entry_never_the_secret(entry, message):
    with pytest.raises(WebhookConfigError) as raised:
        parse({"name": "ok", "url": "https://ok/h", "secret": SECRET}, entry)
    text = str(raised.value)
    assert text.startswith(f"{SOURCE}[1]"), text
    assert message in text, text
    for secret in (SECRET, "hunter2hunter2", "c2hvcnQ=", "!!not-b64!!", "pw@"):
        assert secret not in text


def test_names_are_unique_and_the_file_must_be_a_json_list(tmp_path: Path):
    with pytest.raises(WebhookConfigError, match=r"names must be unique \(ui\)"):
        parse(*[{"name": "ui", "url": "https://a/h", "secret": SECRET}] * 2)
    for text in ("{", '{"name": "ui"}'):
        with pytest.raises(WebhookConfigError, match=r"WEBHOOKS_FILE \(hooks.json\)"):
            parse_endpoints(text, SOURCE)
    with pytest.raises(WebhookConfigError, match="cannot read"):
        read_endpoints_file(str(tmp_path / "missing.json"))
    assert configured_endpoints(None) == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("utf-16", r"\(ui\).secret_file: .*utf16 is not UTF-8 text"),  # a Windows editor's
        ("/dev/zero", r"\(ui\).secret_file: /dev/zero is larger than 4 MiB"),  # endless
    ],
)
def test_a_secret_file_that_is_not_a_text_secret_is_named_never_quoted(
    tmp_path: Path, content: str, message: str
):
    # Given a secret file saved as UTF-16, or one that never ends
    path = "/dev/zero"
    if content == "utf-16":
        path = str(tmp_path / "utf16")
        Path(path).write_text(SECRET + "\n", encoding="utf-16")
    hooks = tmp_path / "hooks.json"
    hooks.write_text(json.dumps([{"name": "ui", "url": "https://a/h", "secret_file": path}]))
    # Then reading the endpoints fails naming the entry and the file, and no part of the secret
    with pytest.raises(WebhookConfigError, match=message) as raised:
        configured_endpoints(str(hooks))
    assert SECRET[6:12] not in str(raised.value)
    error = raised.value  # and no chained exception quotes the bytes either
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_a_secret_file_may_hold_two_keys_while_one_is_rotated(tmp_path: Path):
    old = "whsec_" + base64.b64encode(b"o" * 24).decode()
    (tmp_path / "ui").write_text(f"{SECRET}\n{old}\n")
    hooks = tmp_path / "hooks.json"
    hooks.write_text(
        json.dumps([{"name": "ui", "url": "https://a/h", "secret_file": str(tmp_path / "ui")}])
    )
    (ui,) = configured_endpoints(str(hooks))
    assert ui.keys == (b"k" * 32, b"o" * 24)
    signature = signed_headers(ui, "7-1", 1700000000, b"{}")["webhook-signature"]
    assert signature.count("v1,") == 2  # both sign; a receiver with either key verifies
    for secret in (SECRET, old):
        stamp = datetime.fromtimestamp(1700000000, tz=UTC)
        assert Webhook(secret).sign("7-1", stamp, "{}") in signature.split(" ")


def test_signing_matches_the_specs_published_test_vector():
    # standard-webhooks/standard-webhooks, libraries/python/tests: test_sign_function
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign([key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_headers_verify_with_the_spec_library_and_the_body_is_what_was_signed():
    (ui,) = parse({"name": "ui", "url": "https://a/h", "secret": SECRET})
    event = {"specversion": "1.0", "id": "812-4", "type": "io.tenant-provisioner.tenant.created"}
    body = body_of(event)
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers(ui, event["id"], now, body)
    assert Webhook(SECRET).verify(body, headers) == event
    assert headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    assert headers["webhook-id"] == "812-4" and headers["webhook-timestamp"] == str(now)
    tampered = body.replace(b"created", b"deleted")
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(tampered, headers)
