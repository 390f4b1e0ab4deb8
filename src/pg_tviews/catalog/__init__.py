"""The pg_tviews catalog: versioned migration chain and installer."""

from .chain import Chain, Script, load
from .installer import InstalledCatalog, InstallResult, install, installed, require

__all__ = ["Chain", "InstallResult", "InstalledCatalog", "Script", "install", "installed", "load", "require"]
