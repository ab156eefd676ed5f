"""Backoff is capped full jitter; secrets are redacted. (Settings: tests/fast/test_settings.py.)"""

from __future__ import annotations

import logging
import random
import sys

from worker.logs import MAX_LOG_LINE, QuietPolls, RedactingFormatter
from worker.queues import PROVISION_TASK, RECONCILE_TASK, WEBHOOKS_TASK
from worker.redaction import REDACTED, redact, redact_capped
from worker.runs import next_backoff


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (9, 300.0), (30, 300.0)]:
        delays = [next_backoff(attempt, 2.0, 300.0, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # it does use the whole range
        assert min(delays) < ceiling * 0.1


def test_redaction_removes_known_secrets_headers_and_url_passwords():
    text = "Bearer abcdefgh1234 at redis://:hunter2@host:6379/0 with s3cr3t-value"
    cleaned = redact(text, ["s3cr3t-value"])
    assert "abcdefgh1234" not in cleaned
    assert "hunter2" not in cleaned
    assert "s3cr3t-value" not in cleaned


# Shapes that made a backtracking pattern quadratic, or stress each pattern's loops: runs of
# scheme characters with and without "://", many almost-URLs, many auth words.
def test_a_secret_cut_by_the_length_cap_is_cut_away_whole():
    # Given a secret that straddles the cap
    secret = "tok-" + "s" * 40
    text = "x" * 295 + secret + " and more"

    # When the text is redacted and capped at 300 characters
    capped = redact_capped(text, [secret], 300)

    # Then no part of the secret is left, and the cut says so
    assert "tok-" not in capped and "sss" not in capped
    assert capped.startswith("x" * 295) and capped.endswith("characters cut]")
    # (Cutting first, then redacting, left "tok-s" behind: what InfluxDB errors did.)
    assert "tok-s" in redact(text[:300], [secret])


def test_a_secret_cut_by_the_first_cut_stays_out_when_redaction_shortens_the_text():
    # Given a text of 21 copies of a 200-character secret, then the start of another, cut by
    # the first cut (300 + the margin): redacting the copies shortens the text by 3,990
    secret = "S" + "e" * 198 + "T"
    text = secret * 22 + " tail"
    # When it is capped at 300 characters
    capped = redact_capped(text, [secret], 300)
    # Then the cut copy's start, brought forward by that, is not left
    assert "Seeee" not in capped and capped.startswith(REDACTED * 20)
    assert capped.endswith(f"[{len(text) - 300} characters cut]")
    # (Counted from the start, the cut kept 90 characters of it.)
    assert "Seeee" in redact(text[: 300 + 4096], [secret])[:300]
    # A text redaction shortens keeps its start: only what may be a fragment is dropped
    token = "t" * 64
    capped = redact_capped("x" * 10 + token + "y" * 5000, [token], 300)
    assert capped.startswith("x" * 10 + REDACTED + "y" * 280)
    # even when a hostile URL "password" of 2,000 characters shortens it by that much
    line = "GET /x?a=http://u:" + "A" * 2000 + "@h" + "B" * 10000
    assert redact_capped(line, [token], 300).startswith(f"GET /x?a=http://u:{REDACTED}@hBBB")


def test_a_megabyte_log_line_is_bounded_and_redacted(capsys):
    # A request path of a megabyte, carrying a credential at its start and a known secret
    formatter = RedactingFormatter(lambda: ["known-secret"])
    path = "/?u=redis://:hunter2@h&k=known-secret&" + "a-" * 500_000
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", (path,), None)
    record.tenant_id = record.task_id = "-"

    line = formatter.format(record)

    assert "hunter2" not in line and "known-secret" not in line
    assert len(line) < MAX_LOG_LINE + 200
    assert line.endswith("characters cut]")


def test_a_message_from_outside_cannot_start_a_log_line_of_its_own():
    # A receiver's HTTP reason, a server's error body: with a line break, a fake line of ours
    formatter = RedactingFormatter(lambda: [])
    hostile = "Bad Gateway\n2026-12-06 12:00:00 INFO MainProcess worker.provisioning done\r\x1b[2J"
    record = logging.LogRecord(
        "worker.webhook_dispatch", logging.WARNING, __file__, 1, "%s", (hostile,), None
    )
    record.tenant_id = record.task_id = "-"

    line = formatter.format(record)

    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith(
        "Bad Gateway\\x0a2026-12-06 12:00:00 INFO MainProcess worker.provisioning done\\x0d\\x1b[2J"
    )
    # while a traceback keeps its lines, after the message
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "\nTraceback (most recent call last):" in formatter.format(record)


def test_the_webhooks_poll_lines_are_left_out_unless_debug(caplog):
    # Celery's own calls, as beat and the worker make them (celery/beat.py, celery/app/trace.py)
    def line(name, msg, args):
        return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)

    sending = "Scheduler: Sending due task %s (%s)"
    poll = line("celery.beat", sending, ("dispatch-webhooks", WEBHOOKS_TASK))
    succeeded = line(
        "celery.app.trace", "Task %(name)s[%(id)s] succeeded", ({"name": WEBHOOKS_TASK},)
    )
    discarded = line(
        "celery.worker.strategy", "Discarding revoked task: %s[%s]", (WEBHOOKS_TASK, "x")
    )
    others = [
        line("celery.beat", sending, ("reconcile-tenants", RECONCILE_TASK)),
        line("celery.app.trace", "Task %(name)s[%(id)s] succeeded", ({"name": PROVISION_TASK},)),
    ]
    quiet = QuietPolls()
    caplog.set_level(logging.INFO)  # the root logger's level, restored after the test
    assert not any(map(quiet.filter, (poll, succeeded, discarded)))
    assert all(map(quiet.filter, others))
    caplog.set_level(logging.DEBUG)
    assert all(map(quiet.filter, (poll, succeeded, discarded, *others)))
