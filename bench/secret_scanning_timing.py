"""Whether GitHub's answer to a secret-scanning report takes as long for a live key as for a token
that is no key of ours (docs/operating/secret-scanning.md): the label must be all that tells them apart.

    .venv/bin/python bench/secret_scanning_timing.py [--requests 150] [--smtp-delay 0.25]

Starts PostgreSQL, Redis, an SMTP server that takes --smtp-delay seconds per message (as a remote
one does) and a fake of GitHub's key endpoint (tests/fakes/github_keys_server.py), then sends
signed reports in turn: one holding a live key (of an account with a webhook endpoint subscribed
to `key.leaked`, so its revocation records an event, a delivery and a mail), one holding a
well-formed key that does not exist, one holding a token whose checksum fails, in a shuffled order
each round. Prints the median time per answer, and the median over the rounds of each answer's
time divided by the unknown key's in the same round (1.00: nothing to tell them apart).
"""

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOUND_AT = "https://github.com/octo-org/octo-repo/blob/2f1e0d3c/settings.py"
sys.path.insert(0, str(ROOT))


class SlowInbox:
    def __init__(self, delay: float):
        self.delay, self.received = delay, 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        await asyncio.sleep(self.delay)
        self.received += 1
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150, help="rounds: answers timed per kind of token")
    parser.add_argument("--smtp-delay", type=float, default=0.25, help="seconds the SMTP server takes a message")
    args = parser.parse_args()

    from aiosmtpd.controller import Controller
    from flask_migrate import upgrade
    from starlette.testclient import TestClient

    from levqor_core.accounts import mail
    from levqor_core.accounts.models import Account
    from levqor_core.app import create_app
    from levqor_core.extensions import db
    from levqor_core.keys import format as key_format
    from levqor_core.keys import leaks
    from levqor_core.keys import service as keys
    from levqor_core.webhooks import service as webhooks
    from tests.fakes.github_keys_server import GitHubKeysServer
    from tests.servers import PostgresServer, RedisServer, free_port

    inbox = SlowInbox(args.smtp_delay)
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    github = GitHubKeysServer().start()
    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    try:
        url = postgres.create_database("levqor_scanning_timing")
        cx = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url.replace("postgresql://", "postgresql+psycopg://"),
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "SECRET_KEY": "bench",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": smtp.port,
                "SMTP_STARTTLS": False,
                "GITHUB_SECRET_SCANNING_KEYS_URL": github.url,
                "LOG_LEVEL": "ERROR",
            }
        )
        app = cx.app
        logging.getLogger("levqor_core.keys.leaks").setLevel(logging.ERROR)  # one line per revocation
        live: list[str] = []
        with app.app_context():
            upgrade()
            for _ in range(args.requests + 3):
                account = Account(email=f"owner-{uuid.uuid4().hex[:10]}@example.com", password_hash="x", tier="pro")
                db.session.add(account)
                db.session.commit()
                live.append(keys.issue(account, keys.Actor(email="bench")).raw)
                webhooks.create_endpoint(
                    account,
                    "http://127.0.0.1:9/hook",
                    ["key.leaked"],
                    sandbox=False,
                    secret_key="bench",
                    allow_private=True,
                )
        client = TestClient(cx)
        signer = github.current

        def answer_time(token: str) -> float:
            match = {"token": token, "type": "levqor_api_key", "url": FOUND_AT, "source": "content"}
            body = json.dumps([match]).encode()
            headers = signer.headers(body)
            started = time.perf_counter()
            response = client.post("/api/secret-scanning/github", content=body, headers=headers)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            return elapsed

        def unknown() -> str:
            return key_format.generate()

        def bad_checksum() -> str:
            raw = key_format.generate()
            return raw[:-1] + ("A" if raw[-1] != "A" else "B")

        for _ in range(3):  # warm: the key fetch, the statements, the pools
            answer_time(live.pop())
            answer_time(unknown())
        kinds = {"live key": live.pop, "unknown key": unknown, "bad checksum": bad_checksum}
        times = {kind: [] for kind in kinds}
        order = list(kinds)
        for _ in range(args.requests):
            random.shuffle(order)  # no kind always first or last in a round
            for kind in order:
                times[kind].append(answer_time(kinds[kind]()))
        print(f"SMTP server taking {args.smtp_delay * 1000:.0f} ms per message; {args.requests} rounds")
        for label, measured in times.items():
            # Each round's answers are compared with each other (the machine's load drifts between
            # rounds, not within one): the median of the per-round ratios.
            paired = statistics.median(m / u for m, u in zip(measured, times["unknown key"], strict=True))
            median = statistics.median(measured) * 1000
            print(f"{label:13} median {median:6.2f} ms   / unknown key, per round: median {paired:.2f}")
        leaks.wait_until_notified()
        mail.wait_until_sent(timeout=args.requests * args.smtp_delay * 4)
        print(f"messages the SMTP server received: {inbox.received} (one per live key reported)")
    finally:
        logging.getLogger("levqor_core").setLevel(logging.CRITICAL)  # the flushers' last ticks find Redis gone
        smtp.stop()
        github.close()
        redis_server.close()
        postgres.close()


if __name__ == "__main__":
    main()
