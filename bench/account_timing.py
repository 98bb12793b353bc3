"""Whether sign-up, forgot password and resend confirmation take as long for an address with an
account as for one without (README "Accounts", Mail): the time is all a stranger sees of the answer.

    .venv/bin/python bench/account_timing.py [--requests 30] [--smtp-delay 0.25]

Starts PostgreSQL, Redis and an SMTP server (aiosmtpd) that takes --smtp-delay seconds per message,
as a remote one does, then posts each form for a known and an unknown address in turn, each request
from an address of its own (the per-address limits stay out of the way). Prints the median time per
answer and the ratio known / unknown (1.00: nothing to tell them apart).
"""

import argparse
import asyncio
import itertools
import logging
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


class SlowInbox:
    def __init__(self, delay: float):
        self.delay, self.received = delay, 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        await asyncio.sleep(self.delay)
        self.received += 1
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="answers timed per address and form")
    parser.add_argument("--smtp-delay", type=float, default=0.25, help="seconds the SMTP server takes a message")
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="on a SQLite file, as `make run` (the suite's PostgreSQL runs with fsync off: a commit costs nothing)",
    )
    args = parser.parse_args()

    from aiosmtpd.controller import Controller
    from flask_migrate import upgrade
    from starlette.testclient import TestClient

    from levqor_core.accounts import mail
    from levqor_core.accounts import service as accounts
    from levqor_core.app import create_app
    from tests.servers import PostgresServer, RedisServer, free_port

    inbox = SlowInbox(args.smtp_delay)
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    try:
        if args.sqlite:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='lvq-timing-')}/levqor.sqlite"
        else:
            url = postgres.create_database("levqor_timing").replace("postgresql://", "postgresql+psycopg://")
        cx = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url,
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "SECRET_KEY": "bench",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": smtp.port,
                "SMTP_STARTTLS": False,
            }
        )
        with cx.app.app_context():
            upgrade()
            confirmed = accounts.create(f"known-{uuid.uuid4().hex[:8]}@example.com", "purple otter gravel lantern")
            unconfirmed = accounts.create(
                f"pending-{uuid.uuid4().hex[:8]}@example.com", "purple otter gravel lantern", confirmed=False
            )
            known = {"/reset": confirmed.email, "/confirm": unconfirmed.email, "/signup": confirmed.email}
        hosts = (f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in itertools.count(1))

        def answer_time(path: str, email: str) -> float:
            client = TestClient(cx, follow_redirects=False, client=(next(hosts), 40000))
            token = CSRF.search(client.get(path).text).group(1)
            started = time.perf_counter()
            form = {"email": email, "csrf_token": token}
            if path == "/signup":
                form["password"] = "purple otter gravel lantern"
            response = client.post(path, data=form)
            elapsed = time.perf_counter() - started
            assert response.status_code < 400, (path, response.status_code)
            return elapsed

        print(f"SMTP server taking {args.smtp_delay * 1000:.0f} ms per message; {args.requests} answers each")
        forms = (("/signup", "sign-up"), ("/reset", "forgot password"), ("/confirm", "resend confirmation"))
        for path, label in forms:
            for _ in range(3):  # warm: templates, the hashing pool
                answer_time(path, f"warm-{uuid.uuid4().hex[:8]}@example.com")
            times = {"known": [], "unknown": []}
            for _ in range(args.requests):
                times["known"].append(answer_time(path, known[path]))
                times["unknown"].append(answer_time(path, f"nobody-{uuid.uuid4().hex[:8]}@example.com"))
            k, u = (statistics.median(times[w]) * 1000 for w in ("known", "unknown"))
            print(f"{label:20} known {k:7.1f} ms   unknown {u:7.1f} ms   known/unknown {k / u:.2f}")
        mail.wait_until_sent(timeout=args.requests * args.smtp_delay * 4)
        print(f"messages the SMTP server received: {inbox.received}")
    finally:
        logging.getLogger("levqor_core").setLevel(logging.CRITICAL)  # the flushers' last ticks find Redis gone
        smtp.stop()
        redis_server.close()
        postgres.close()


if __name__ == "__main__":
    main()
