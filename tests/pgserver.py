"""A throwaway PostgreSQL server for tests: Debian's binaries, a temp data dir, a unix socket only.

PostgreSQL refuses to run as root: under root the server runs as the `postgres` user that
Debian's package creates (its data dir is handed to that user). It listens on no TCP port
(listen_addresses=''), trusts local connections, and is stopped by its pid on every path.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here (bootstrap.sh installs Debian's `postgresql`)."""


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise PostgresUnavailable("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql package")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    root: Path
    process: subprocess.Popen[bytes] | None = None
    _counter: int = field(default=0)

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def psql_url(self, database: str = "postgres") -> str:
        """The libpq spelling (psycopg.connect)."""
        return f"host={self.socket_dir} user={SUPERUSER} dbname={database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        with psycopg.connect(self.psql_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        proc = self.process
        if proc is None:
            return
        self.process = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)


def _as_user() -> dict[str, object]:
    """Popen arguments that drop root to the postgres user; nothing when not root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresUnavailable(f"no {SUPERUSER} user to run the server as (Debian's postgresql creates it)") from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def start() -> PostgresServer:
    """initdb + postgres in a new temp dir; the caller must stop() it (and may remove root)."""
    binaries = bin_dir()
    drop = _as_user()
    root = Path(tempfile.mkdtemp(prefix="pmemlab-pg-"))
    server = PostgresServer(root)
    try:
        data = root / "data"
        server.socket_dir.mkdir()
        data.mkdir()
        if drop:
            for path in (root, data, server.socket_dir):
                os.chown(path, int(drop["user"]), int(drop["group"]))  # type: ignore[call-overload]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": str(root)}
        subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, env=env, cwd=root,
                       timeout=START_TIMEOUT_S, **drop)  # type: ignore[call-overload]
        log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes it until stop()
        server.process = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data), "-k", str(server.socket_dir), "-c", "listen_addresses=",
             "-c", "fsync=off", "-c", "max_connections=100"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
            **drop)  # type: ignore[call-overload]
        log.close()
        _wait_ready(server)
        return server
    except BaseException:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise


def _wait_ready(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            log = (server.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"postgres exited with {server.process.returncode}: {log}")
        try:
            with psycopg.connect(server.psql_url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready after {START_TIMEOUT_S:.0f} s") from None
            time.sleep(0.1)
