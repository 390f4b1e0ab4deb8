"""pg_tviews: transactional, incrementally maintained JSONB read models for PostgreSQL.

The Python API: every function takes a psycopg connection and works inside the caller's
transaction when one is open.
"""

from .catalog import install
from .engine import TView, alter, create, drop, explain, get, list_tviews, refresh
from .errors import (
    CatalogError,
    CheckFailed,
    ConnectionFailed,
    DefinitionError,
    NotFound,
    ServerError,
    TViewError,
    UpgradeError,
    UsageError,
)

__version__ = "0.2.3"

__all__ = [
    "CatalogError",
    "CheckFailed",
    "ConnectionFailed",
    "DefinitionError",
    "NotFound",
    "ServerError",
    "TView",
    "TViewError",
    "UpgradeError",
    "UsageError",
    "alter",
    "create",
    "drop",
    "explain",
    "get",
    "install",
    "list_tviews",
    "refresh",
]
