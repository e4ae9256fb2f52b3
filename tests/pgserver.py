"""A real PostgreSQL server for the tests and the benchmark: Debian's binaries, a temp directory,
loopback only, stopped and removed on exit.

Why run it as the ``postgres`` user: ``initdb`` refuses to run as root, and CI runs as root. The
data directory is a fresh temp dir owned by that user; the server listens on 127.0.0.1 on a free
port with its socket in the same dir, and trusts connections (nothing but this machine can reach it).

    with PgServer() as pg:
        url = pg.url                      # postgresql://postgres@127.0.0.1:PORT/postgres
        other = pg.create_database("x")   # a fresh, empty database
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from glob import glob
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (scripts/install.sh installs it)"
START_TIMEOUT_S = 60


def pg_bin_dir() -> Path | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if
                   Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def unavailable_reason() -> str | None:
    """Why the harness cannot run here (a test skips with it), or None."""
    if pg_bin_dir() is None:
        return INSTALL_HINT
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to run initdb as (scripts/install.sh makes it)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """Context manager: a running server while inside, nothing left after (even on error)."""

    def __init__(self, *, fsync: bool = True) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError(INSTALL_HINT)
        self.bin = bin_dir
        self.fsync = fsync
        self.port = 0
        self.dir: Path | None = None

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def _run(self, *cmd: str, timeout: float = START_TIMEOUT_S) -> None:
        proc = subprocess.run(self._as_postgres(*cmd), capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")

    def __enter__(self) -> PgServer:
        self.dir = Path(tempfile.mkdtemp(prefix="flightseal-pg-"))
        try:
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            data = self.dir / "data"
            self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            self.port = _free_port()
            opts = (f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync={'on' if self.fsync else 'off'} "
                    "-c max_connections=100")
            self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "server.log"),
                      "-w", "-t", str(START_TIMEOUT_S), "start")
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.dir is not None and (self.dir / "data" / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            self._remove()

    def _remove(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with contextlib.closing(psycopg.connect(self.url, autocommit=True)) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # name is the caller's literal
        return self.database_url(name)

    def client(self, tool: str) -> str:
        """Path of a client tool (``pg_dump``, ``psql``) of the same version as the server."""
        return str(self.bin / tool)
