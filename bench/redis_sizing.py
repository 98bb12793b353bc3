"""How much Redis one active key needs: the figure behind the README's "Redis sizing".

    .venv/bin/python bench/redis_sizing.py [--keys 200] [--calls 20]

Starts a real Redis and PostgreSQL, creates --keys accounts with a key each, and has every key make
a day's typical traffic through the app (v1 reads, v1 jobs, usage reads, sandbox jobs), then a
worst case for the sandbox (MAX_JOBS jobs with inputs at the size cap). Prints Redis's
used_memory per key for each, measured against the empty server.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import PostgresServer, RedisServer  # noqa: E402


def used(r) -> int:
    return r.info("memory")["used_memory"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20, help="v1 calls per key (reads, jobs, usage)")
    args = parser.parse_args()
    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    try:
        from flask_migrate import upgrade

        from levqor_core.accounts.models import Account
        from levqor_core.apijobs import sandbox
        from levqor_core.app import create_app
        from levqor_core.extensions import db
        from levqor_core.keys import service as keys

        database = postgres.create_database("sizing").replace("postgresql://", "postgresql+psycopg://")
        cx = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": database,
                "REDIS_URL": redis_server.url,
                "SECRET_KEY": "x",
                "LOG_LEVEL": "ERROR",
            }
        )
        app = cx.app
        r = app.extensions["levqor.redis"]
        with app.app_context():
            upgrade()
            raw_keys = []
            for i in range(args.keys):
                account = Account(email=f"size-{i}@example.com", password_hash="x", tier="pro")  # noqa: S106
                db.session.add(account)
                db.session.commit()
                raw_keys.append((account.id, keys.issue(account, keys.Actor(email="bench")).raw))
        r.flushdb()
        baseline = used(r)
        with cx.test_client() as client:
            for _, raw in raw_keys:
                headers = {"x-api-key": raw}
                for n in range(args.calls):
                    kind = n % 4
                    if kind == 0:
                        client.get("/api/v1/workflows", headers=headers)
                    elif kind == 1:
                        client.post("/api/v1/jobs", headers=headers, json={"workflow": "echo", "input": {"n": n}})
                    elif kind == 2:
                        client.get("/api/usage", headers=headers)
                    else:
                        body = {"workflow": "text-stats", "input": {"text": "Sandbox calls. Mock data."}}
                        client.post("/api/sandbox/v1/jobs", headers=headers, json=body)
        typical = (used(r) - baseline) / args.keys
        before_worst = used(r)
        blob = {"blob": "x" * (sandbox.MAX_INPUT_BYTES - 20)}
        sample = raw_keys[: min(20, len(raw_keys))]
        with app.app_context():
            for account_id, _ in sample:
                for i in range(sandbox.MAX_JOBS):
                    sandbox.create_job(r, account_id, "echo", blob | {"i": i})
        worst = (used(r) - before_worst) / len(sample)
        print(f"keys: {args.keys}, v1 calls per key: {args.calls} (1/4 each: reads, jobs, usage reads, sandbox jobs)")
        print(f"typical day, per key:              {typical / 1024:8.1f} KiB")
        print(f"sandbox worst case, per account:   {worst / 1024:8.1f} KiB  ({sandbox.MAX_JOBS} jobs at the input cap)")
        print(f"RQ queue backlog ({r.llen('rq:queue:levqor')} queued API jobs) is included in the typical figure")
    finally:
        redis_server.close()
        postgres.close()


if __name__ == "__main__":
    main()
