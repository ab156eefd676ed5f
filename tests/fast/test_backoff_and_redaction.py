"""Backoff is capped full jitter; secrets are redacted. (Settings: tests/fast/test_settings.py.)"""

from __future__ import annotations

import random

from worker.redaction import redact
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
