"""pg_tviews: transactional, incrementally maintained JSONB read models for PostgreSQL."""

from .catalog import install
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

__version__ = "0.2.0"

__all__ = [
    "CatalogError",
    "CheckFailed",
    "ConnectionFailed",
    "DefinitionError",
    "NotFound",
    "ServerError",
    "TViewError",
    "UpgradeError",
    "UsageError",
    "install",
]
