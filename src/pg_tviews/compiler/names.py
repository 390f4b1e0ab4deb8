"""Names of the objects generated for one TVIEW.

Everything but the table lives in schema ``tviews`` and is named after the TVIEW's catalog id
(``tv<id>_...``): ids are plain catalog values that survive pg_dump and pg_upgrade, and the names
never collide with user objects. Triggers on source tables are named ``pg_tviews_<id>_<event>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sqltext import ident

SCHEMA = "tviews"
EVENTS = ("ins", "upd", "del", "trunc")


@dataclass(frozen=True)
class Names:
    id: int
    schema: str  # the TVIEW table's schema
    table: str

    @property
    def prefix(self) -> str:
        return f"tv{self.id}_"

    def _obj(self, suffix: str) -> str:
        return ident(SCHEMA, f"{self.prefix}{suffix}")

    @property
    def target(self) -> str:
        return ident(self.schema, self.table)

    @property
    def view(self) -> str:
        return self._obj("def")

    @property
    def view_name(self) -> str:
        return f"{self.prefix}def"

    @property
    def apply(self) -> str:
        return self._obj("apply")

    @property
    def full(self) -> str:
        return self._obj("full")

    @property
    def lineage(self) -> str:
        return self._obj("lineage")

    @property
    def crossing(self) -> str:
        return self._obj("crossing")

    def trigger_function(self, position: int, event: str) -> str:
        return self._obj(f"s{position}_{event}")

    def trigger(self, event: str) -> str:
        return ident(f"pg_tviews_{self.id}_{event}")

    def gate(self) -> str:
        """BEFORE ROW trigger name; '~' sorts after letters, so it fires after the application's."""
        return ident(f"~pg_tviews_{self.id}_gate")
