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


class RedisClusterServer:
    """A Redis Cluster on loopback: 3 primaries and 3 replicas (`redis-server --cluster-enabled
    yes`, `redis-cli --cluster create … --cluster-replicas 1`), no persistence, a 2 s node timeout
    so a killed primary's replica is promoted within seconds. `tls=True`: every node serves TLS only
    (`--port 0 --tls-port`, the cluster bus and replication over TLS too) with a certificate of a
    throwaway CA (`self.ca`), as a managed Redis Cluster with in-transit encryption does."""

    NODE_TIMEOUT_MS = 2000

    def __init__(self, nodes: int = 6, replicas: int = 1, tls: bool = False):
        self.ports = [free_port() for _ in range(nodes)]
        self.replicas = replicas
        # The cluster bus's ports, named: the default (port + 10000) may be past 65535 or taken.
        self.bus_ports = {port: free_port() for port in self.ports}
        self.dir = tempfile.mkdtemp(prefix="lvq-redis-cluster-")
        self.procs: dict[int, subprocess.Popen] = {}
        self.tls = tls
        if tls:
            from .tls_certs import certificates

            self.ca, self.cert, self.key = certificates(Path(self.dir))

    @property
    def url(self) -> str:
        """Any node's URL: the app finds out it is a cluster (over TLS: the CA in the URL, as an
        operator passes it)."""
        if self.tls:
            return f"rediss://localhost:{self.ports[0]}/0?ssl_ca_certs={self.ca}"
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _listen(self, port: int) -> list[str]:
        if not self.tls:
            return ["--port", str(port)]
        return ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes"] + [
            "--tls-cert-file",
            str(self.cert),
            "--tls-key-file",
            str(self.key),
            "--tls-ca-cert-file",
            str(self.ca),
            "--tls-auth-clients",
            "no",
        ]

    def _cli_tls(self) -> list[str]:
        return ["--tls", "--cacert", str(self.ca)] if self.tls else []

    def _start_node(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            [
                "redis-server",
                *self._listen(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(self.bus_ports[port]),
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(self.NODE_TIMEOUT_MS),
                "--logfile",
                f"node-{port}.log",
                "--repl-diskless-sync-delay",  # replicas in sync at once, not after 5 s
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(port, self.procs[port], "redis-server (cluster node)")

    def start(self) -> "RedisClusterServer":
        for port in self.ports:
            self._start_node(port)
        subprocess.run(
            ["redis-cli", *self._cli_tls(), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if not wait_for(lambda: self.healthy() and self.replicas_in_sync(), timeout=30):
            raise RuntimeError("the Redis Cluster did not reach cluster_state:ok with its replicas in sync")
        return self

    def replicas_in_sync(self) -> bool:
        """Every live replica's link to its primary is up (else it could not be promoted)."""
        for port, proc in self.procs.items():
            info = self.cli(port, "INFO", "replication") if proc.poll() is None else ""
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def cli(self, port: int, *args: str) -> str:
        command = ["redis-cli", *self._cli_tls(), "-p", str(port), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout

    def healthy(self) -> bool:
        """cluster_state:ok on every live node, and every node agrees on 3 primaries with slots."""
        for port, proc in self.procs.items():
            if proc.poll() is None and "cluster_state:ok" not in self.cli(port, "CLUSTER", "INFO"):
                return False
        return True

    def primaries(self) -> list[int]:
        """The ports of the live primaries."""
        return [
            port
            for port, proc in self.procs.items()
            if proc.poll() is None and "role:master" in self.cli(port, "INFO", "replication")
        ]

    def serving(self, key: str) -> int | None:
        """The port of the live primary serving `key`'s slot, None while none does (mid-failover)."""
        try:
            return self.primary_of(key)
        except RuntimeError:
            return None

    def primary_of(self, key: str) -> int:
        """The port of the live primary serving `key`'s slot."""
        slot = int(self.cli(self.primaries()[0], "CLUSTER", "KEYSLOT", key))
        for port in self.primaries():
            ranges = self.cli(port, "CLUSTER", "NODES")
            for row in ranges.splitlines():
                fields = row.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for part in fields[8:]:
                        low, _, high = part.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return port
        raise RuntimeError(f"no live primary serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL a node (its replica is promoted after the node timeout)."""
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a failed-over node again on its config: it rejoins as a replica of its promoted
        one (waited for, with the replicas in sync, so the next test sees a whole cluster)."""
        self._start_node(port)
        rejoined = wait_for(
            lambda: (
                "role:slave" in self.cli(port, "INFO", "replication") and self.healthy() and self.replicas_in_sync()
            ),
            timeout=30,
        )
        if not rejoined:
            raise RuntimeError(f"cluster node {port} did not rejoin as a replica")

    def flush(self) -> None:
        for port in self.primaries():
            self.cli(port, "FLUSHALL")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """A loopback TCP proxy whose target can be switched: one URL in front of whichever server is
    the primary now, as a managed Redis's DNS name is after a failover. Connections made before a
    switch stay with the old target (as a client's open connections to a demoted primary do)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        self._lose_reply_to: bytes | None = None
        self._close_on_loss = True
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def switch_to(self, port: int) -> None:
        self.target_port = port

    def lose_next_reply(self, to: bytes = b"EVALSHA", close: bool = True) -> None:
        """The next request containing `to` reaches the server, but its reply never reaches the
        client: the proxy swallows it and closes that connection (a primary dying just after
        running a command, before its reply left), or with `close=False` keeps it open (a reply
        later than the client's timeout)."""
        self._lose_reply_to = to
        self._close_on_loss = close

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            losing = threading.Event()  # this connection's next reply is to be lost
            threading.Thread(target=self._pipe, args=(client, upstream, losing, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, losing, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, losing: threading.Event, request: bool) -> None:
        source.settimeout(None)
        try:
            while chunk := source.recv(65536):
                if request and self._lose_reply_to is not None and self._lose_reply_to in chunk:
                    self._lose_reply_to = None
                    losing.set()  # before the server can answer
                elif not request and losing.is_set():
                    if self._close_on_loss:
                        return  # swallowed; both ends closed below
                    losing.clear()
                    continue  # swallowed; the connection stays up
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
