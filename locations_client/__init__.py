"""Where is tenant X? The location client for the services that write and read telemetry.

Standard library only (no Celery, no worker, no SQLAlchemy): copy the package or install the
project. It holds the whole location map in memory, refreshes it in the background by asking
``/locations`` for the changes since its version, and answers :meth:`resolve` from memory in
about a microsecond - a :class:`Location` (write there), :class:`NotReady` (being
provisioned, failed, being deleted: write nowhere yet) or :data:`UNKNOWN` (no such tenant).
It never answers a default server. When the service cannot be reached it keeps its last map
and says how stale it is (:attr:`LocationClient.staleness`); once that is longer than the
service's deletion wait (``max_staleness_seconds``) it fails closed: :class:`Stale` for every
tenant (``resolve(id, stale_ok=True)``: the map as held, for reads)::

    from locations_client import LocationClient, Location

    client = LocationClient("http://provisioner:8000", token=LOCATIONS_TOKEN).start()
    where = client.resolve("acme")
    if isinstance(where, Location):
        requests.post(f"{where.url}/api/v3/write_lp", params={"db": where.database}, ...)

``AsyncLocationClient`` does the same for asyncio services.
"""

from locations_client.client import AsyncLocationClient, LocationClient
from locations_client.map import UNKNOWN, Location, LocationServiceError, NotReady, Stale, Unknown

__all__ = [
    "UNKNOWN",
    "AsyncLocationClient",
    "Location",
    "LocationClient",
    "LocationServiceError",
    "NotReady",
    "Stale",
    "Unknown",
]
