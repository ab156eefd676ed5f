"""Benchmarks of the tenant-provisioner on real processes: ``bash bench/run [--quick]``.

Results and method: ``docs/benchmarks.md``. Every run gets its own Postgres database (dropped at
the end), Redis DB 12 (flushed before and after) and an InfluxDB 3 stand-in; nothing else on the
servers is touched.
"""
