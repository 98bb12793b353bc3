"""A fake of GitHub's secret-scanning key endpoint on 127.0.0.1: real HTTP, GitHub's JSON shape
(`GET /meta/public_keys/secret_scanning` → `{"public_keys": [{"key_identifier", "key", "is_current"}]}`),
serving P-256 keys made in the test, and a signer that signs a report as GitHub does (base64 DER
ECDSA over SHA-256 of the raw body)."""

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PATH = "/meta/public_keys/secret_scanning"


class SigningKey:
    """A P-256 key pair as GitHub holds one: its identifier is the hex SHA-256 of its public key."""

    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.identifier = hashlib.sha256(der).hexdigest()
        self.pem = (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private.sign(body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> dict:
        """The headers GitHub sends with a report."""
        return {
            "Content-Type": "application/json",
            "Github-Public-Key-Identifier": self.identifier,
            "Github-Public-Key-Signature": self.sign(body),
        }


class GitHubKeysServer:
    """Serves `keys` (the current one first); `requests` counts the fetches; `status` fails them on demand."""

    def __init__(self):
        self.keys: list[SigningKey] = [SigningKey()]
        self.requests = 0
        self.status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                fake.requests += 1
                if self.path != PATH:
                    return self._answer(404, {"message": "Not Found"})
                if fake.status != 200:
                    return self._answer(fake.status, {"message": "Server Error"})
                document = {
                    "public_keys": [
                        {"key_identifier": k.identifier, "key": k.pem, "is_current": i == 0}
                        for i, k in enumerate(fake.keys)
                    ]
                }
                return self._answer(200, document)

            def _answer(self, status: int, body: dict):
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def current(self) -> SigningKey:
        return self.keys[0]

    def start(self) -> "GitHubKeysServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
