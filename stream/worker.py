"""The pipeline as a separate process that the dashboard starts, pauses, resumes and stops.

The worker is ``python -m stream <source> ... --status-file F``: it writes its stats as JSON to F
(atomically, about once a second) and handles SIGUSR1 (pause) / SIGUSR2 (resume) / SIGTERM (stop
after the current batch). A pid file beside the database (in data/ for a PostgreSQL store) lets a restarted dashboard find it.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .backend import is_url, split_password

__all__ = ["Worker", "status_path", "write_status", "control_path", "read_control"]

_REPO = Path(__file__).resolve().parents[1]
_LOG_MARK = "\n--- sparsepulse worker started "


def _base(db: str | Path) -> str:
    """Where a store's worker files live: beside an SQLite file; for a PostgreSQL store, in data/
    under a name derived from the URL (without its password)."""
    if not is_url(db):
        return str(db)
    return str(_REPO / "data" / f"postgresql-{hashlib.sha1(split_password(db)[0].encode()).hexdigest()[:12]}")


def status_path(db: str | Path) -> Path:
    return Path(_base(db) + ".worker.json")


def control_path(db: str | Path) -> Path:
    """What the dashboard asks of a running worker (JSON: {"model": path}); read about once a second."""
    return Path(_base(db) + ".worker.control.json")


def read_control(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _pid_path(db: str | Path) -> Path:
    return Path(_base(db) + ".worker.pid")


def write_status(path: Path, status: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


class Worker:
    """Handle on the pipeline process of one database (``db``)."""

    def __init__(self, db: str | Path):
        self.db = db if is_url(db) else Path(db)
        #: the location on the worker's command line (a URL without its password) and the password
        self._arg, self._password = split_password(db)
        Path(_base(db)).parent.mkdir(parents=True, exist_ok=True)

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is still this database's worker (a pid file can outlive its process and
        the pid be reused): its command line must be ``... -m stream --db <this db> ...``."""
        for _ in range(50):
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                return False
            except OSError:
                return True  # no /proc to look in (not Linux): trust the pid file
            if raw:
                break
            time.sleep(0.01)  # empty while the kernel is still setting up a just-started exec (or a kernel thread)
        argv = raw.split(b"\0")
        args = [a.decode("utf-8", "replace") for a in argv]
        return "stream" in args and "--db" in args and self._arg in args

    def _pid(self) -> int | None:
        try:
            pid = int(_pid_path(self.db).read_text())
        except (OSError, ValueError):
            return None
        if pid <= 1:
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        if not self._is_ours(pid):
            return None
        try:  # a zombie child of ours counts as gone
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return None
        except ChildProcessError:
            pass
        return pid

    @property
    def running(self) -> bool:
        return self._pid() is not None

    def start(self, source_args: list[str], *, model: str | None = None, threads: int = 0, log_file: str | Path | None = None, env: dict[str, str] | None = None) -> int:
        """Start ``python -m stream --db DB <source_args> --status-file ...`` (stops a running one first).

        ``env``: extra environment for the worker process only (the X bearer token goes here, never
        into this process's environment, where every browser session of the dashboard would see it)."""
        self.stop()
        write_status(control_path(self.db), {"model": str(model)} if model else {})
        write_status(status_path(self.db), {"state": "starting", "written_wall": time.time(), "exited": False})  # not the last run's
        cmd = [sys.executable, "-m", "stream", "--db", self._arg, *source_args, "--quiet", "--status-file", str(status_path(self.db)), "--threads", str(threads)]
        if model:
            cmd += ["--model", str(model)]
        child_env = {**os.environ, **(env or {}), "PYTHONPATH": str(_REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if self._password is not None:
            child_env["PGPASSWORD"] = self._password
        with open(log_file or self.log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"{_LOG_MARK}{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd[2:])}\n".encode())
            log.flush()
            p = subprocess.Popen(cmd, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
        tmp = Path(str(_pid_path(self.db)) + ".tmp")
        tmp.write_text(str(p.pid))
        os.replace(tmp, _pid_path(self.db))  # a reader never sees a half-written pid
        return p.pid

    def switch_model(self, model: str | Path) -> None:
        """Ask the running worker to score with ``model`` from now on: it keeps its replay clock
        (no restart, no re-timing) and marks the switch in the store."""
        write_status(control_path(self.db), {"model": str(model)})

    def signal(self, sig: int) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        return True

    def pause(self) -> bool:
        return self.signal(signal.SIGUSR1)

    def resume(self) -> bool:
        return self.signal(signal.SIGUSR2)

    def stop(self, timeout: float = 10.0) -> None:
        pid = self._pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and self._pid() is not None:
            time.sleep(0.1)
        if self._pid() is not None:
            os.kill(pid, signal.SIGKILL)  # the store stays consistent: one transaction per batch

    @property
    def log_path(self) -> Path:
        return Path(_base(self.db) + ".worker.log")

    def last_run_log(self, max_lines: int = 25, max_bytes: int = 65536) -> str:
        """The end of the latest run's output (read from the last ``max_bytes`` of the log only)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = tail.rsplit(_LOG_MARK, 1)[1].splitlines()[1:] if _LOG_MARK in tail else tail.splitlines()
        return "\n".join(lines[-max_lines:])

    def died(self) -> str | None:
        """Not running, and its last status is not the final one a worker writes as it ends (a crash,
        ``kill -9``, out of memory): the end of its log, or a line saying there is none."""
        st = self.status()
        if st is None or st["running"] or st.get("exited") is not False:  # (a status without the key: an older worker)
            return None
        return self.last_run_log() or "(the worker wrote nothing)"

    def status(self) -> dict | None:
        try:
            st = json.loads(status_path(self.db).read_text())
        except (OSError, ValueError):
            return None
        st["running"] = self.running
        return st
