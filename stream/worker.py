"""The pipeline as a separate process that the dashboard starts, pauses, resumes and stops.

The worker is ``python -m stream <source> ... --status-file F``: it writes its stats as JSON to F
(atomically, about once a second) and handles SIGUSR1 (pause) / SIGUSR2 (resume) / SIGTERM (stop
after the current batch). A pid file beside the database lets a restarted dashboard find it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Worker", "status_path", "write_status", "control_path", "read_control"]

_REPO = Path(__file__).resolve().parents[1]


def status_path(db: str | Path) -> Path:
    return Path(str(db) + ".worker.json")


def control_path(db: str | Path) -> Path:
    """What the dashboard asks of a running worker (JSON: {"model": path}); read about once a second."""
    return Path(str(db) + ".worker.control.json")


def read_control(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _pid_path(db: str | Path) -> Path:
    return Path(str(db) + ".worker.pid")


def write_status(path: Path, status: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


class Worker:
    """Handle on the pipeline process of one database (``db``)."""

    def __init__(self, db: str | Path):
        self.db = Path(db)

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is still this database's worker (a pid file can outlive its process and
        the pid be reused): its command line must be ``... -m stream --db <this db> ...``."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # no /proc to look in (not Linux): trust the pid file
        args = [a.decode("utf-8", "replace") for a in argv]
        return "stream" in args and "--db" in args and str(self.db) in args

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
        cmd = [sys.executable, "-m", "stream", "--db", str(self.db), *source_args, "--quiet", "--status-file", str(status_path(self.db)), "--threads", str(threads)]
        if model:
            cmd += ["--model", str(model)]
        child_env = {**os.environ, **(env or {}), "PYTHONPATH": str(_REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(log_file or str(self.db) + ".worker.log", "ab") as log:  # the child keeps its own descriptor
            p = subprocess.Popen(cmd, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
        _pid_path(self.db).write_text(str(p.pid))
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

    def status(self) -> dict | None:
        try:
            st = json.loads(status_path(self.db).read_text())
        except (OSError, ValueError):
            return None
        st["running"] = self.running
        return st
