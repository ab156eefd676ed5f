"""What the hooks accept and refuse, checked as pure functions: ids, names, retention periods,
and URLs as the CLI prints them."""

from __future__ import annotations

import pytest

from api_hooks import InvalidRetentionPeriod, InvalidTenantId, InvalidTenantName
from api_hooks.tenants import (
    validate_retention_period,
    validate_tenant_id,
    validate_tenant_name,
)
from worker.redaction import redact, redact_url, url_secrets


@pytest.mark.parametrize("tenant_id", ["a", "acme", "Acme-01_x", "0day", "x" * 54])
def test_valid_tenant_ids(tenant_id):
    assert validate_tenant_id(tenant_id) == tenant_id


@pytest.mark.parametrize(
    ("tenant_id", "rule"),
    [
        ("", "must not be empty"),
        ("-x", "must start with"),
        ("a.b", "may contain only"),
        ("a\nb", "may contain only"),
        ("ä", "must start with"),
        ("x" * 55, "at most 54"),
        (42, "must be a string"),
    ],
)
def test_invalid_tenant_ids_name_the_rule(tenant_id, rule):
    with pytest.raises(InvalidTenantId, match=rule):
        validate_tenant_id(tenant_id)


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("  Acme  ", "Acme"),
        ("\u00a0Acme\u3000", "Acme"),  # any space separator at the edges
        ("Café Zürich", "Café Zürich"),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467 family", None),  # ZWJ emoji sequence
        ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", None),  # tags
        ("日本語の名前", None),
    ],
)
def test_names_are_free_text(name, stored):
    assert validate_tenant_name(name) == (stored or name)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 201, "at most 200"),
        ("tab\there", "control characters"),
        # at the edges too: never dropped quietly, though str.strip() takes them for spaces
        ("\tAcme", "control characters"),
        ("\x1c\x1fAcme", "control characters"),
        ("Acme\x85", "control characters"),
        ("Acme\n", "control characters"),
        ("Acme\u2029", "line breaks"),
        ("del\x7f", "control characters"),
        ("line\u2028break", "line breaks"),
        ("para\u2029break", "line breaks"),
        ("\u202eevil", "bidirectional"),
        ("\u2066isolate", "bidirectional"),
        ("soft\u00adhyphen", "invisible formatting"),
        ("\ufeffbom", "invisible formatting"),
        ("\ud800", "lone surrogate"),
        (None, "must be a string"),
        # drawn as nothing: a name the operator cannot see or tell apart
        ("\u200d", "must show a letter"),
        ("\u200c\u200d\u200c", "must show a letter"),
        ("\u3164", "must show a letter"),  # a Hangul filler: a letter drawn as nothing
        ("\u2800\u2800", "must show a letter"),  # the blank Braille pattern
        # tag characters hide text, except in a flag (U+1F3F4 then tags, ended by U+E007F)
        ("\U000e0061\U000e0062", "invisible formatting"),
        ("Acme\U000e0065\U000e0076\U000e0069\U000e006c", "invisible formatting"),
        # after a flag too, past a flag's six letters and cancel tag
        ("Acme \U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "evil corp"), "invisible"),
        ("\U0001f3f4\U000e0067\U000e0062\U000e007f\U000e0061", "invisible formatting"),
    ],
)
def test_names_that_could_mislead_or_break_a_page_are_refused(name, rule):
    with pytest.raises(InvalidTenantName, match=rule):
        validate_tenant_name(name)


@pytest.mark.parametrize(
    "period",
    [
        "1h",
        "12h",
        "30d",
        "2w",
        "3mo",
        "1y",
        "100y",
        "2562047h",
        "106751d",
        "15250w",
        "3506mo",
        "292y",
    ],
)
def test_retention_periods_core_accepts(period):
    assert validate_retention_period(period) == period


@pytest.mark.parametrize(
    "period", ["0d", "90m", "45s", "1d12h", "1h 30m", "30d\n", " 30d", "10000000d", "30D", 30, ""]
)
def test_retention_periods_core_refuses(period):
    with pytest.raises(InvalidRetentionPeriod, match="h, d, w, mo or y"):
        validate_retention_period(period)


# InfluxDB 3 counts a period in signed 64-bit nanoseconds: past 292 years it wraps round, and
# the cutoff lands in the future (999y hides every point) or near now (585y keeps 21 days).
@pytest.mark.parametrize(
    "period", ["2562048h", "106752d", "15251w", "3507mo", "293y", "585y", "999y", "9999999y"]
)
def test_retention_periods_influxdb_would_wrap_are_refused_naming_the_limits(period):
    with pytest.raises(InvalidRetentionPeriod, match=r"at most 292 years \(2562047h, 106751d"):
        validate_retention_period(period)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://influx:8181", "http://influx:8181"),
        ("https://ops:s3cret@influx:8181/", "https://ops:[REDACTED]@influx:8181/"),
        ("http://tokenonly@influx", "http://[REDACTED]@influx"),
        ("http://influx/?api_token=abc&region=eu", "http://influx/?api_token=[REDACTED]&region=eu"),
        (
            "https://hooks.slack.com/services/T0001/B0001/xoxb7Q2mZt9KfA41bR0c",
            "https://hooks.slack.com/services/T0001/B0001/[REDACTED]",
        ),
        (
            "https://discord.com/api/webhooks/1234567890123456789/aB3-dE6fG9hJ2kL5mN8p",
            "https://discord.com/api/webhooks/1234567890123456789/[REDACTED]",
        ),
        (
            "https://ui.example.com/provisioning-events/v2",
            "https://ui.example.com/provisioning-events/v2",
        ),
        (  # a token of letters only, both cases
            "https://hooks.slack.com/services/T0001/B0001/xoxbQmZtKfAbRcWdYe",
            "https://hooks.slack.com/services/T0001/B0001/[REDACTED]",
        ),
        (  # a value that reads as a secret, whatever its key: Azure Logic Apps' signature
            "https://prod.logic.azure.com/workflows/abc/invoke?api-version=2016-10-01&sv=1.0"
            "&sig=Xk3vQ9mZt2KfA41bR0cYwE7",
            "https://prod.logic.azure.com/workflows/abc/invoke?api-version=2016-10-01&sv=1.0"
            "&sig=[REDACTED]",
        ),
        (  # Azure Functions' function key, base64 with / and + (a space once decoded)
            "https://fn.azurewebsites.net/api/hook?code=aB3d/E6fG9h+J2kL5mN8pQ1r==",
            "https://fn.azurewebsites.net/api/hook?code=[REDACTED]",
        ),
        (  # names and ids are no secrets, whatever their length: kept
            "https://hooks.example.com/in?channel=provisioning-alerts-2024"
            "&run=123e4567-e89b-12d3-a456-426614174000",
            "https://hooks.example.com/in?channel=provisioning-alerts-2024"
            "&run=123e4567-e89b-12d3-a456-426614174000",
        ),
    ],
)
def test_urls_are_printed_without_credentials(url, shown):
    assert redact_url(url) == shown


def test_a_url_s_short_values_are_not_taken_for_secrets():
    # Hidden wherever they appear, "2" and "id" would garble every error of the endpoint
    assert url_secrets("https://hooks.example.com/in?api_key=2&sort_key=id") == ()


def test_a_query_value_that_reads_as_a_secret_is_known_whatever_its_key():
    # The dispatcher removes these from stored errors and logs: the page hides them too
    url = "https://prod.logic.azure.com/workflows/abc/invoke?sv=1.0&sig=Xk3vQ9mZt2KfA41bR0cYwE7"
    assert url_secrets(url) == ("Xk3vQ9mZt2KfA41bR0cYwE7",)
    # as decoded and as written, / and + (%2B) in it
    url = "https://fn.azurewebsites.net/api/hook?code=aB3d/E6fG9h%2BJ2kL5mN8pQ1r%3D%3D"
    assert url_secrets(url) == ("aB3d/E6fG9h+J2kL5mN8pQ1r==", "aB3d/E6fG9h%2BJ2kL5mN8pQ1r%3D%3D")


def test_a_url_s_secrets_are_known_as_written_too():
    # An error may quote the URL as written: percent-encoded, not as parse_qsl decodes it
    url = "https://hooks.example.com/in?token=ab%2Bcd%3D%3D&region=eu"
    assert redact(f"HTTP 502 for {url}", url_secrets(url)) == (
        "HTTP 502 for https://hooks.example.com/in?token=[REDACTED]&region=eu"
    )
