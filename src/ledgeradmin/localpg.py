"""A throwaway local PostgreSQL server: for the test suite, `ledgeradmin demo` and benchmarks.

    with LocalPostgres() as pg:
        psycopg.connect(pg.conninfo())

The server lives in a private temporary directory (data directory, unix socket, log)
and listens on that socket only, unless ``tcp=True``. PostgreSQL refuses to run as
root, so when this process is root, ``initdb`` and ``pg_ctl`` run as an unprivileged
OS user (``postgres`` if it exists, else ``nobody``) through ``runuser``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from psycopg.conninfo import make_conninfo

SERVER_PROGRAMS = ("pg_ctl", "initdb", "postgres")

#: Where PostgreSQL server binaries usually live; globs list the highest version first.
DEFAULT_LOCATIONS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # PGDG RPMs (RHEL, Fedora)
    "/usr/local/pgsql/bin",  # built from source
    "/opt/homebrew/opt/postgresql@*/bin",  # Homebrew, Apple silicon
    "/opt/homebrew/bin",
    "/usr/local/opt/postgresql@*/bin",  # Homebrew, Intel
    "/usr/local/bin",
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
)

INSTALL_HINT = (
    "Install the PostgreSQL server (Debian/Ubuntu: `apt-get install -y postgresql`; "
    "macOS: `brew install postgresql`) or put its bin directory on PATH."
)

#: Settings that trade durability for speed; only for servers whose data may be lost.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class LocalPgError(RuntimeError):
    """The local PostgreSQL server could not be found, set up, started or stopped."""


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key of a directory by the version numbers in its path ('…/9.6/bin' < '…/16/bin')."""
    return tuple(int(n) for n in re.findall(r"\d+", path))


def _has_server_programs(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in SERVER_PROGRAMS)


def candidate_bindirs(path: str | None = None, locations: Iterable[str] = DEFAULT_LOCATIONS) -> list[Path]:
    """Directories that may hold the server programs, in search order.

    First the directories of ``pg_ctl`` on ``path`` (default: $PATH), as found and with
    symlinks resolved, then ``locations``; a glob in ``locations`` lists its matches
    highest version first.
    """
    found: list[Path] = []
    search_path = os.environ.get("PATH", "") if path is None else path
    pg_ctl = shutil.which("pg_ctl", path=search_path) if search_path else None
    if pg_ctl:
        found += [Path(pg_ctl).parent, Path(pg_ctl).resolve().parent]
    for location in locations:
        found += [Path(p) for p in sorted(glob.glob(location), key=_version_key, reverse=True)]
    return list(dict.fromkeys(found))  # drop duplicates, keep order


def find_bindir(path: str | None = None, locations: Iterable[str] = DEFAULT_LOCATIONS) -> Path:
    """Return the first directory holding ``pg_ctl``, ``initdb`` and ``postgres``.

    Raises LocalPgError with an install hint when there is none.
    """
    locations = list(locations)
    for directory in candidate_bindirs(path, locations):
        if _has_server_programs(directory):
            return directory
    searched = ", ".join(["$PATH" if path is None else path or "(empty PATH)", *locations])
    raise LocalPgError(f"PostgreSQL server programs ({', '.join(SERVER_PROGRAMS)}) not found in {searched}. {INSTALL_HINT}")


def _free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote_setting(value: object) -> str:
    """A postgresql.conf value: always single-quoted, which every setting accepts."""
    return "'" + str(value).replace("'", "''") + "'"


class LocalPostgres:
    """A private PostgreSQL server in a temporary directory, for tests, demos and benchmarks.

    :param fast: turn off fsync, synchronous_commit and full_page_writes (tests only;
        benchmarks keep the defaults).
    :param tcp: also listen on 127.0.0.1, on a free port.
    :param keep: keep the temporary directory after stop() (to read the log, say).
    :param settings: extra postgresql.conf settings, e.g. ``{"shared_buffers": "256MB"}``.
    :param bindir: directory of the server programs; default: ``find_bindir()``.
    :param base_dir: where to create the temporary directory; default: the system's.
    """

    user = "postgres"  #: the database superuser (created by initdb, trust authentication)

    def __init__(
        self,
        *,
        fast: bool = False,
        tcp: bool = False,
        keep: bool = False,
        settings: Mapping[str, object] | None = None,
        bindir: str | Path | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        self.bindir = Path(bindir) if bindir is not None else find_bindir()
        if not _has_server_programs(self.bindir):
            raise LocalPgError(f"{self.bindir} lacks {', '.join(SERVER_PROGRAMS)}. {INSTALL_HINT}")
        self.fast = fast
        self.tcp = tcp
        self.keep = keep
        self.settings = {**(FAST_SETTINGS if fast else {}), **(settings or {})}
        self.base_dir = base_dir
        self.os_user = self._unprivileged_user() if os.geteuid() == 0 else None
        self.version = self._read_version()
        self.port = _free_tcp_port() if tcp else 5432
        self.dir: Path | None = None  # the temporary directory, while set up
        self._running = False

    # -- public interface ---------------------------------------------------------------

    @property
    def host(self) -> str:
        """The unix socket directory (libpq's ``host`` for a socket)."""
        if self.dir is None:
            raise LocalPgError("the local PostgreSQL server is not started")
        return str(self.dir)

    @property
    def datadir(self) -> Path:
        """The data directory."""
        return Path(self.host) / "data"

    @property
    def logfile(self) -> Path:
        """The server log."""
        return Path(self.host) / "postgres.log"

    def conninfo(self, dbname: str = "postgres", *, tcp: bool = False) -> str:
        """libpq connection string for ``dbname``: via the unix socket, or via TCP if asked."""
        if tcp and not self.tcp:
            raise LocalPgError("this server was started without tcp=True")
        host = "127.0.0.1" if tcp else self.host
        return make_conninfo(host=host, port=str(self.port), user=self.user, dbname=dbname)

    def start(self) -> LocalPostgres:
        """Create the cluster and start the server; return self. Stops again on failure."""
        if self._running:
            return self
        atexit.register(self.stop)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix="ledgeradmin-pg-", dir=self.base_dir))
            if self.os_user:
                pw = pwd.getpwnam(self.os_user)
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._initdb()
            self._write_settings()
            self._run("pg_ctl", "start", "-w", "-t", "120", "-D", str(self.datadir), "-l", str(self.logfile))
            self._running = True
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the temporary directory unless ``keep``.

        Safe to call more than once and after a failed start.
        """
        atexit.unregister(self.stop)
        if self.dir is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.datadir))
                    break
                except LocalPgError:
                    continue
        self._running = False
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def detach(self) -> None:
        """Leave the server running for good: stop() and the exit hook no longer touch it."""
        atexit.unregister(self.stop)
        self.dir = None

    SHUTDOWN_MODES = ("smart", "fast", "immediate")

    def restart(self, mode: str = "fast") -> None:
        """Stop the server with pg_ctl's shutdown ``mode`` and start it again on the same
        data directory. ``"immediate"`` is a crash: no checkpoint, the server replays its
        WAL when it starts (crash recovery); connections are cut either way."""
        if mode not in self.SHUTDOWN_MODES:
            raise ValueError(f"shutdown mode must be one of {', '.join(self.SHUTDOWN_MODES)}, not {mode!r}")
        if not self._running or self.dir is None:
            raise LocalPgError("the local PostgreSQL server is not started")
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.datadir))
        self._run("pg_ctl", "start", "-w", "-t", "120", "-D", str(self.datadir), "-l", str(self.logfile))

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"host={self.dir} port={self.port}" if self._running else "stopped"
        return f"<LocalPostgres {self.version} {state}>"

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _unprivileged_user() -> str:
        """The OS user that runs the server when we are root."""
        if shutil.which("runuser") is None:
            raise LocalPgError("running as root needs `runuser` (util-linux) to start PostgreSQL as another user")
        try:
            pwd.getpwnam("postgres")
            return "postgres"
        except KeyError:
            return "nobody"

    def _read_version(self) -> str:
        """Server version from ``postgres --version``, e.g. '15.18'."""
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"\(PostgreSQL\)\s+(\S+)", out)
        return match.group(1) if match else out.strip()

    def _run(self, program: str, *args: str) -> str:
        """Run a server program (as the unprivileged user when root); return its output."""
        command = [str(self.bindir / program), *args]
        if self.os_user:
            command = ["runuser", "-u", self.os_user, "--", *command]
        # PG* variables (PGDATA, PGPORT, ...) would change what the programs do.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        result = subprocess.run(
            command, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise LocalPgError(
                f"{program} {args[0] if args else ''} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}{log}".rstrip()
            )
        return result.stdout

    def _initdb(self) -> None:
        """Create the cluster: superuser postgres, trust auth, UTF8; locale C.UTF-8, else C."""
        base = ["-D", str(self.datadir), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync"]
        try:
            self._run("initdb", *base, "--locale=C.UTF-8")
        except LocalPgError:
            shutil.rmtree(self.datadir, ignore_errors=True)
            self._run("initdb", *base, "--locale=C")

    def _write_settings(self) -> None:
        """Append connection and extra settings to postgresql.conf (keeps the file's owner)."""
        settings = {
            "listen_addresses": "127.0.0.1" if self.tcp else "",
            "port": self.port,
            "unix_socket_directories": self.host,
            **self.settings,
        }
        lines = "".join(f"{name} = {_quote_setting(value)}\n" for name, value in settings.items())
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# ledgeradmin local server\n" + lines)
