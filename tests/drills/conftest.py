"""Fixtures of the failure drills (``own_redis``, a broker a drill may kill, is in
tests/conftest.py: the README's main command's test runs on one too)."""
