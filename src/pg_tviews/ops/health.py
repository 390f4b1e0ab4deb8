"""Health of the TVIEWs of a database: the findings of tviews.pg_tviews_health_check().

The checks themselves live in the catalog (so any SQL client or scheduler can run them); this
module reads them, attributes each finding to its TVIEW and decides whether the database passes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import psycopg

from .. import catalog
from ..errors import CheckFailed, UsageError

SEVERITIES = ("info", "warning", "error")
DEFAULT_SAMPLE = 100


@dataclass
class Finding:
    """One result of a check: what it is about (component, TVIEW), how bad, and what was seen."""

    component: str
    status: str  # ok, warn, fail
    severity: str  # info, warning, error
    message: str
    tview: str | None = None


@dataclass
class HealthReport:
    findings: list[Finding]
    sample: int  # keys compared per TVIEW; 0: every row

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(f.severity for f in self.findings)
        return {severity: found.get(severity, 0) for severity in SEVERITIES}

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def healthy(self) -> bool:
        return not self.errors

    @property
    def problems(self) -> list[Finding]:
        """Warnings and errors, the findings worth showing when space is short."""
        return [f for f in self.findings if f.severity != "info"]

    def as_dict(self) -> dict:
        return {
            "healthy": self.healthy,
            "sample": self.sample,
            "counts": self.counts,
            "findings": [asdict(f) for f in self.findings],
        }


def _owner(names: list[str], message: str) -> str | None:
    """The TVIEW a message is about: messages start `TVIEW <name>:` or `TVIEW <name> <verb>`."""
    # longest name first, so that `s.tv_a` is not taken for `s.tv_ab`
    for name in sorted(names, key=len, reverse=True):
        prefix = f"TVIEW {name}"
        if message.startswith(prefix) and message[len(prefix):len(prefix) + 1] in (":", " "):
            return name
    return None


def check(conn: psycopg.Connection, sample: int = DEFAULT_SAMPLE) -> HealthReport:
    """Run every health check; `sample` keys per TVIEW are compared with the definition (0: all).

    Differences of an async TVIEW that still has queued changes are lag, not drift: they are
    reported as a warning saying so. The queue is read in the same snapshot as the comparison.
    """
    if sample < 0:
        raise UsageError(f"--sample must be 0 or more, not {sample}", hint="0 compares every row")
    catalog.require(conn)
    outer = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if not outer:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rows = conn.execute(
            "SELECT component, status, severity, message FROM tviews.pg_tviews_health_check(%s)", (sample,)
        ).fetchall()
        tviews = conn.execute(
            "SELECT format('%I.%I', e.schema_name, e.table_name),"
            "       (SELECT count(*) FROM tviews.queue q WHERE q.entity_id = e.id AND q.processed_at IS NULL"
            "           AND q.attempts < tviews.queue_max_attempts())"
            "  FROM tviews.entity e"
        ).fetchall()
    pending = dict(tviews)
    findings = []
    for component, status, severity, message in rows:
        finding = Finding(component, status, severity, message, _owner(list(pending), message))
        if component == "drift" and severity == "error" and pending.get(finding.tview):
            finding = _lag(finding, pending[finding.tview])
        findings.append(finding)
    return HealthReport(findings, sample)


def _lag(finding: Finding, pending: int) -> Finding:
    """A drift error of an async TVIEW with queued changes, as the warning it is."""
    return Finding(
        finding.component, "warn", "warning",
        f"{finding.message}; {pending} queued changes are not applied yet (async lag, not necessarily drift:"
        " run the worker or `pg-tviews queue --drain`, then check again)",
        finding.tview,
    )


def require_healthy(report: HealthReport, *, strict: bool = False) -> None:
    """Raise CheckFailed when the report has errors (or warnings, when strict)."""
    failing = report.errors + (report.warnings if strict else [])
    if failing:
        kinds = "errors or warnings" if strict else "errors"
        drift = any(f.component == "drift" for f in failing)
        raise CheckFailed(
            f"health check failed: {len(failing)} {kinds}; first: {failing[0].message}",
            hint="`pg-tviews verify --repair` shows and fixes the drifted rows" if drift
            else "see the findings above (docs/operations.md says what each means)",
        )
