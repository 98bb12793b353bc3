"""The gate's script client over TLS (`rediss://`, as Heroku Redis and most managed Redis serve it),
against a real redis-server with TLS on: it connects, checks the certificate by default as
redis-py does, and skips the check only when the URL says `ssl_cert_reqs=none`."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis
import redis.asyncio

from levqor_core import redis_scripts

from .helpers import run_on_own_loop as run
from .servers import _wait_port, free_port
from .tls_certs import certificates

SCRIPT = "return {ARGV[1], redis.call('INCR', KEYS[1])}"


@pytest.fixture(scope="module")
def tls_redis():
    """redis-server serving only TLS on a free loopback port; yields (port, CA file)."""
    folder = Path(tempfile.mkdtemp(prefix="lvq-redis-tls-"))
    ca, cert, key = certificates(folder)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
        + ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
        + ["--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc, "redis-server (TLS)")
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _script_call(url: str, arg: str = "x"):
    return run(redis_scripts.ScriptClient(url, timeout=5, connect_timeout=5).register_script(SCRIPT)(["tls:n"], [arg]))


def _redis_py_ping(url: str):
    async def ping():
        client = redis.asyncio.from_url(url, socket_timeout=5)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    return run(ping())


def test_rediss_with_the_certificate_check_off_runs_the_script_over_tls(tls_redis):
    port, _ = tls_redis
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"
    first, second = _script_call(url, "a"), _script_call(url, "b")
    assert first[0] == b"a" and second[0] == b"b" and second[1] == first[1] + 1
    assert _redis_py_ping(url) is True  # the same URL works for redis-py's client, the app's other one


def test_rediss_checks_the_certificate_by_default_as_redis_py_does(tls_redis):
    port, _ = tls_redis
    url = f"rediss://localhost:{port}/0"  # a CA nobody trusts: refused, by both clients
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        _script_call(url)
    with pytest.raises(redis.ConnectionError):
        _redis_py_ping(url)


def test_rediss_accepts_a_certificate_from_a_trusted_ca_for_the_host_named(tls_redis, monkeypatch):
    port, ca = tls_redis
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # OpenSSL's default trust store, as the client loads it
    reply = _script_call(f"rediss://localhost:{port}/0", "trusted")
    assert reply[0] == b"trusted"


def test_a_plain_redis_url_to_a_tls_port_fails_as_a_connection_error(tls_redis):
    port, _ = tls_redis
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        run(redis_scripts.ScriptClient(f"redis://127.0.0.1:{port}/0", timeout=1).register_script("return 1")())
