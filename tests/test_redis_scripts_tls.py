"""The gate's script client over TLS (`rediss://`, as Heroku Redis and most managed Redis serve it),
against a real redis-server with TLS on: it connects, checks the certificate by default as
redis-py does, and skips the check only when the URL says `ssl_cert_reqs=none`."""

import datetime
import ipaddress
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis
import redis.asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from levqor_core import redis_scripts

from .helpers import run_on_own_loop as run
from .servers import _wait_port, free_port

SCRIPT = "return {ARGV[1], redis.call('INCR', KEYS[1])}"


def _write_key(path: Path, key) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA, and a server certificate it signed for `localhost` and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "levqor test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, certificate and CRL signing
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths[2], key)
    return paths


@pytest.fixture(scope="module")
def tls_redis():
    """redis-server serving only TLS on a free loopback port; yields (port, CA file)."""
    folder = Path(tempfile.mkdtemp(prefix="lvq-redis-tls-"))
    ca, cert, key = _certificates(folder)
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
