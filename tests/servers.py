"""Real Redis and PostgreSQL servers on loopback for tests and benchmarks (Debian packages)."""

import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

# Under pytest-xdist each worker takes its ports from a block of its own below Linux's ephemeral
# range (32768-60999), so a port stays this worker's while a server on it is stopped and started
# again (the outage tests): no other worker's server and no outgoing connection can take it meanwhile.
PORT_BLOCK_START, PORT_BLOCK_SIZE = 20000, 500
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port nothing listens on (under xdist: one this process has not handed out before)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", … under pytest-xdist
    if not worker.startswith("gw"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    first = PORT_BLOCK_START + int(worker[2:]) * PORT_BLOCK_SIZE
    candidates = [p for p in range(first, first + PORT_BLOCK_SIZE) if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        if _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port left in {first}-{first + PORT_BLOCK_SIZE - 1} for xdist worker {worker}")


def wait_for(predicate, timeout: float, step: float = 0.2):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


@contextlib.contextmanager
def served_in_thread(asgi_app):
    """The app served for real by uvicorn on a free port, in a thread of this process; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


class RedisServer:
    """redis-server on 127.0.0.1:<port>, no persistence; stop() and start() keep the port."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lvq-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (make system-deps installs it)")
    return found[-1]


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<port> (run as `postgres` when we are root)."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lvq-pg-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen | None = None
        self.as_root = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)

    def url(self, db: str = "levqor_test") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> "PostgresServer":
        if self.as_root:
            shutil.chown(self.dir, "postgres")
            os.chmod(self.dir, 0o700)
        subprocess.run(
            self._cmd(
                _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return self.resume()

    def stop(self) -> None:
        """Stop the server (an outage); `resume()` starts it again on the same data and port."""
        if self.proc and self.proc.poll() is None:
            # A fast shutdown (SIGINT) of the postmaster itself: a smart one (SIGTERM) waits for the
            # app's pooled clients, and runuser passes no SIGINT on.
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGINT)
            self.proc.wait(timeout=20)
            wait_for(lambda: not (self.data / "postmaster.pid").exists(), timeout=20, step=0.05)
        self.proc = None

    def resume(self) -> "PostgresServer":
        self.proc = subprocess.Popen(
            self._cmd(
                _pg_bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-h",
                "127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, "postgres")
        for _ in range(100):
            ok = (
                subprocess.run(
                    [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL
                ).returncode
                == 0
            )
            if ok:
                break
            time.sleep(0.1)
        return self

    def create_database(self, name: str) -> str:
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name], check=True
        )
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncerServer:
    """PgBouncer (Debian's 1.18) in transaction pooling in front of a PostgresServer, as a
    platform's connection pooler runs it; `pool_size` server connections per database and user."""

    def __init__(self, postgres: PostgresServer, pool_size: int = 4):
        self.postgres = postgres
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lvq-pgbouncer-"))
        self.pool_size = pool_size
        self.proc: subprocess.Popen | None = None

    def url(self, db: str = "levqor_test") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> "PgBouncerServer":
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"""[databases]
* = host=127.0.0.1 port={self.postgres.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 500
logfile = {self.dir / "pgbouncer.log"}
"""
        )
        command = ["/usr/sbin/pgbouncer", str(self.dir / "pgbouncer.ini")]
        if self.postgres.as_root:  # it refuses to run as root
            shutil.chown(self.dir, "postgres")
            for name in ("userlist.txt", "pgbouncer.ini"):
                shutil.chown(self.dir / name, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "pgbouncer")
        return self

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)
