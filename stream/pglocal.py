"""A throwaway PostgreSQL server on this machine, for tests, benchmarks and trying the PostgreSQL store:
``initdb`` into a fresh directory and ``pg_ctl`` on a Unix socket there (no TCP port, trust auth).

    python -m stream.pglocal            # start one, print its URL, stop it on Ctrl-C

Needs the server binaries (Debian: ``apt-get install postgresql``). PostgreSQL refuses to run as
root, so as root the server runs as the ``postgres`` system user (``runuser``).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LocalPostgres", "PostgresUnavailable", "pg_bindir"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def pg_bindir() -> Path:
    """The directory of ``initdb`` / ``pg_ctl`` (on PATH, or Debian's /usr/lib/postgresql/N/bin)."""
    for cand in [os.path.dirname(shutil.which("initdb") or ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if cand and os.path.isfile(os.path.join(cand, "initdb")) and os.path.isfile(os.path.join(cand, "pg_ctl")):
            return Path(cand)
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")


class LocalPostgres:
    """One server: ``start()`` (idempotent), ``url``, ``stop()``; also a context manager."""

    def __init__(self, root: str | Path | None = None, db: str = "sparsepulse"):
        self.bindir = pg_bindir()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="sparsepulse-pg-"))
        self.data, self.sock, self.log = self.root / "data", self.root / "sock", self.root / "server.log"
        self.db = db
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://sparsepulse@/{self.db}?host={self.sock}"

    def _run(self, *cmd: str) -> None:
        r = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if r.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({r.returncode}): {r.stderr.strip()[-2000:]}\n{log}")

    def start(self) -> "LocalPostgres":
        if self.running():
            return self
        self.sock.mkdir(parents=True, exist_ok=True)
        if self._as:  # the server's user owns its directory
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "sparsepulse", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        opts = f"-c listen_addresses='' -c unix_socket_directories='{self.sock}' -c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")
        import psycopg

        with psycopg.connect(f"postgresql://sparsepulse@/postgres?host={self.sock}", autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.db,)).fetchone():
                c.execute(f'CREATE DATABASE "{self.db}"')
        return self

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True).returncode == 0

    def stop(self, remove: bool = True) -> None:
        if (self.data / "PG_VERSION").exists() and self.running():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with LocalPostgres() as pg:
        print(pg.url, flush=True)
        print("Ctrl-C stops the server and removes its directory", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
