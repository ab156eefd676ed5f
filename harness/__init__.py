"""The real processes and databases that tests and benchmarks run against, in one copy.

``harness.processes`` starts and stops Celery workers, beat and servers (each in its own
session, stopped by process group); ``harness.databases`` makes, migrates and drops a Postgres
database of a run's own. Tests (``tests/conftest.py``) and benchmarks (``bench/harness.py``)
both build on these; neither holds a second copy.
"""
