"""PostgreSQL servers: the embedded default server and clusters of any major (tests, pg_upgrade)."""

from .cluster import Binaries, Cluster, server_os_user
from .embedded import ServerStatus, data_dir, ensure_running, status, stop

__all__ = ["Binaries", "Cluster", "ServerStatus", "data_dir", "ensure_running", "server_os_user", "status", "stop"]
