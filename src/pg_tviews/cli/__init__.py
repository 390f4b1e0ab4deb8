"""The ``pg-tviews`` command line: a thin layer over the Python API.

Exit codes: 0 ok, 1 a check failed, 2 usage error or bad input. Errors print as one line plus a
hint, without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated

import psycopg
import typer

from ..connection import Target, connect, resolve
from ..errors import TViewError
from .output import Output

app = typer.Typer(
    name="pg-tviews",
    help="Transactional, incrementally maintained JSONB read models (TVIEWs) for PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    """Global options, shared by every command through the click context."""

    dsn: str | None = None
    data_dir: str | None = None
    out: Output = field(default_factory=Output)
    _target: Target | None = None

    def target(self) -> Target:
        if self._target is None:
            self._target = resolve(self.dsn, data_dir=self.data_dir)
        return self._target

    def connect(self, **kwargs) -> psycopg.Connection:
        kwargs.setdefault("autocommit", True)
        return connect(self.target(), **kwargs)


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


@app.callback()
def _global(
    ctx: typer.Context,
    dsn: Annotated[
        str | None,
        typer.Option("--dsn", help="PostgreSQL connection string (else $PG_TVIEWS_DSN, $DATABASE_URL, PG*, embedded)"),
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option("--data-dir", help="Embedded server data directory (else $PG_TVIEWS_DATA_DIR, ./.pg_tviews/data)"),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors")] = False,
) -> None:
    ctx.obj = State(dsn=dsn, data_dir=data_dir, out=Output(json=json_output, debug=debug))


def _register() -> None:
    """Import every `*_cmds` module of this package: commands register themselves on import."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name.endswith("_cmds"):
            importlib.import_module(f"{__name__}.{module.name}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs the app and turns errors into exit codes."""
    _register()
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    out = Output(json="--json" in args)
    try:
        # standalone mode: usage errors print the usage and exit 2, --help exits 0
        app(args=args, prog_name="pg-tviews")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except TViewError as exc:
        if debug:
            raise
        out.error(str(exc), exc.hint)
        return exc.exit_code
    except psycopg.Error as exc:
        if debug:
            raise
        diag = getattr(exc, "diag", None)
        out.error(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                  getattr(diag, "message_hint", None))
        return 2
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    return 0
