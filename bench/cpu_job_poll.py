"""CPU time per job poll (GET /api/v1/jobs/{job_id}) and per job submit (POST /api/v1/jobs), in
process, beside bench/cpu.py's targets.

    .venv/bin/python bench/cpu_job_poll.py [--requests 300] [--rounds 9] [--compare REV]

The same method as bench/cpu.py (its ASGI driver, no socket, no HTTP parser; rounds alternate the
targets; the median over rounds of process CPU per request): the bare Connexion peer, the
authorised v1 read (no SQL: the reference for "the gate and nothing else"), the job poll of 40
Pro accounts' finished echo jobs, and the submit of an echo job by 40 Enterprise accounts (their
jobs are marked finished between rounds, outside the measure, so none meets its cap), on real
PostgreSQL and Redis started here. --compare REV measures
the app as of git revision REV as well (a temporary worktree, its own process): a before/after.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUBMIT_BODY = json.dumps({"workflow": "echo", "input": {"text": "a job, as a client submits it"}}).encode()


def measure(app_root: Path, n: int, rounds: int) -> dict:
    """In the process that imports the app from `app_root`: {target: median µs per request}."""
    sys.path[:0] = [str(app_root), str(HERE / "peers" / "bare_connexion"), str(HERE), str(ROOT)]
    os.environ.setdefault("VALIDATE_RESPONSES", "0")  # as served
    import server as bare  # the peer
    import sqlalchemy as sa
    from cpu import call, cpu_per_request, scope
    from flask_migrate import upgrade

    from levqor_core.accounts.models import Account
    from levqor_core.apijobs.models import Job, new_job_id
    from levqor_core.app import create_app
    from levqor_core.columns import utcnow
    from levqor_core.extensions import db
    from levqor_core.keys import service as keys
    from tests.servers import PostgresServer, RedisServer

    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    try:
        url = postgres.create_database("levqor_cpu_poll")
        cx = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url.replace("postgresql://", "postgresql+psycopg://"),
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "SECRET_KEY": "bench",
            }
        )
        v1, polls, submits = [], [], []
        with cx.app.app_context():
            upgrade()
            for i in range(40):  # Pro's burst per key stays out of the way at 40 keys
                account = Account(email=f"poll-{uuid.uuid4().hex[:8]}@example.com", password_hash="x", tier="pro")
                db.session.add(account)
                db.session.commit()
                raw = keys.issue(account, keys.Actor(email="bench")).raw.encode()
                now = utcnow()
                job = Job(
                    id=new_job_id(),
                    account_id=account.id,
                    workflow="echo",
                    input={"i": i, "text": "a finished job, as a client polls it"},
                    status="succeeded",
                    result={"i": i, "text": "a finished job, as a client polls it"},
                    created_at=now,
                    started_at=now,
                    finished_at=now,
                )
                db.session.add(job)
                db.session.commit()
                v1.append(scope("/api/v1/workflows", [(b"x-api-key", raw)]))
                polls.append(scope(f"/api/v1/jobs/{job.id}", [(b"x-api-key", raw)]))
            for _ in range(40):  # Enterprise: 25 jobs in flight each, 1,000 in all
                account = Account(
                    email=f"submit-{uuid.uuid4().hex[:8]}@example.com", password_hash="x", tier="enterprise"
                )
                db.session.add(account)
                db.session.commit()
                raw = keys.issue(account, keys.Actor(email="bench")).raw.encode()
                headers = [(b"x-api-key", raw), (b"content-type", b"application/json")]
                submits.append(scope("/api/v1/jobs", [*headers, (b"content-length", b"%d" % len(SUBMIT_BODY))]))
                submits[-1]["method"] = "POST"
        if n > len(submits) * 25:
            sys.exit(f"--requests {n} would pass the submitting accounts' caps ({len(submits) * 25})")
        targets = {"bare": (bare.app, [scope("/api/health")]), "v1": (cx, v1), "poll": (cx, polls)}

        def finish_submitted_jobs():
            with cx.app.app_context():
                db.session.execute(sa.update(Job).where(Job.status == "queued").values(status="succeeded"))
                db.session.commit()

        async def submit_cpu(count: int) -> float:
            finish_submitted_jobs()
            started = time.process_time()
            for i in range(count):
                if (status := await call(cx, submits[i % len(submits)], SUBMIT_BODY)) != 202:
                    sys.exit(f"POST /api/v1/jobs answered {status}")
            return (time.process_time() - started) / count * 1e6

        async def run() -> dict:
            for asgi, requests in targets.values():  # warm: imports, caches, key records, pool
                await cpu_per_request(asgi, requests, 100)
            await submit_cpu(100)
            samples = {name: [] for name in [*targets, "submit"]}
            for _ in range(rounds):
                for name, (asgi, requests) in targets.items():
                    samples[name].append(await cpu_per_request(asgi, requests, n))
                samples["submit"].append(await submit_cpu(n))
            return {name: statistics.median(values) for name, values in samples.items()}

        return asyncio.run(run())
    finally:
        redis_server.close()
        postgres.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per target per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds (median taken)")
    parser.add_argument("--compare", metavar="REV", help="also measure the app as of git revision REV")
    parser.add_argument("--app-root", type=Path, help=argparse.SUPPRESS)  # the measuring child
    args = parser.parse_args()
    if args.app_root:
        print(json.dumps(measure(args.app_root, args.requests, args.rounds)))
        return 0
    runs = [("this tree", ROOT)]
    with tempfile.TemporaryDirectory(prefix="lvq-poll-") as tmp:
        if args.compare:
            before = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(before), args.compare], cwd=ROOT, check=True)
            runs.append((args.compare, before))
        try:
            for label, root in runs:
                child = subprocess.run(
                    [sys.executable, __file__, "--app-root", str(root), "--requests", str(args.requests)]
                    + ["--rounds", str(args.rounds)],
                    cwd=root,
                    capture_output=True,
                    text=True,
                )
                if child.returncode != 0:
                    sys.exit(f"{label}: {child.stderr[-3000:]}")
                f = json.loads(child.stdout.strip().splitlines()[-1])
                print(
                    f"{label:24} bare Connexion {f['bare']:6.0f} µs   v1 read {f['v1']:6.0f} µs   "
                    f"job poll {f['poll']:6.0f} µs   bare/poll {f['bare'] / f['poll']:.2f}   "
                    f"poll - v1 {f['poll'] - f['v1']:5.0f} µs   job submit {f.get('submit', float('nan')):6.0f} µs"
                )
        finally:
            if args.compare:
                subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    print(f"(process CPU per request, median of {args.rounds} rounds of {args.requests}; no socket, no HTTP parser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
