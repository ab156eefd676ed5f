"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print the report.

Use ``bash bench/run``, which installs what is needed and starts Postgres/Redis if they are down.
The run's settings are applied before anything reads them (as tests/conftest.py does).
"""

from bench.config import apply_environment

apply_environment()

from bench.runner import main  # noqa: E402 - the settings above must come first

raise SystemExit(main())
