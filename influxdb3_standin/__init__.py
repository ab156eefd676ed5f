"""In-memory stand-in for the InfluxDB 3 Core HTTP API, for tests and local runs (not InfluxDB).

See :mod:`influxdb3_standin.server` for what it implements and why it exists.
"""

from influxdb3_standin.server import StandIn

__all__ = ["StandIn"]
