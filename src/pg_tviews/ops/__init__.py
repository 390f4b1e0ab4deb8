"""Operating TVIEWs: health, statistics, the status screen, the dependency graph, Prometheus
metrics, drift verification and repair, and the quickstart demo.

One module per concept; each works on a psycopg connection (or a DSN for those that create
databases) and returns plain dataclasses that the CLI renders for people or as JSON.
"""

from . import demo, graph, health, metrics, overhead, stats, status, verify

__all__ = ["demo", "graph", "health", "metrics", "overhead", "stats", "status", "verify"]
