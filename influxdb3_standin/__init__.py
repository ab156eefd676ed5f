"""A stand-in for the InfluxDB 3 Core HTTP API. It is NOT InfluxDB.

InfluxDB 3 Core cannot be installed on our test machines, so the test suite and local runs talk to
this small in-memory HTTP server instead. It follows the contract written down in
``../shared/influxdb3-api.md`` (status codes and bodies, including the mix of plain-text and JSON
error bodies sent without a ``Content-Type``), and nothing more: a handful of SQL shapes, a simple
line-protocol parser, no persistence. Where the contract is silent, it follows InfluxDB 3's
source (v3.10.1): the listing with ``show_deleted=true`` adds a boolean ``deleted`` column
(``influxdb3_query_executor``'s ``show_databases``), active databases first. Production and
``docker-compose.yml`` use the real ``influxdb:3-core`` image.

On top of the API it offers switches that real servers only show on bad days (latency, 5xx,
hanging requests, connection resets, outages), so that retry and failure handling can be tested
over real HTTP. Everything is kept in memory and lost when the process ends.

One module per concern: ``server`` (the ``StandIn`` class, wiring the rest), ``handlers`` (the
API's endpoints), ``auth``, ``catalog`` (databases, tables, points), ``lineprotocol``, ``sql``,
``messages`` (request and answer types, the contract's wording), ``faults`` (failure switches),
``control`` (the ``/_standin/*`` endpoints) and ``transport`` (HTTP plumbing).
"""

from influxdb3_standin.server import StandIn

__all__ = ["StandIn"]
