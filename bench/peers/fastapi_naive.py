"""The naive FastAPI stack an API like this one is often first written as: an API key looked up in
SQL on every call (SQLAlchemy, the app's own `api_keys` table), slowapi's per-key limit on Redis,
and a Redis INCR for usage; the endpoint a plain `def` (FastAPI runs it in its thread pool).

DATABASE_URL and REDIS_URL as for the app; served like the app:
gunicorn -k uvicorn_worker.UvicornWorker -w 2 --chdir bench/peers fastapi_naive:app
"""

import hashlib
import os
from datetime import UTC, datetime

import redis
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded

WORKFLOWS = {"data": [{"id": "echo", "description": "Returns its input."}]}

engine = sa.create_engine(os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"), pool_size=10)
usage = redis.Redis.from_url(os.environ["REDIS_URL"])
limiter = Limiter(key_func=lambda request: request.headers.get("x-api-key", ""), storage_uri=os.environ["REDIS_URL"])
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)


def account_of(x_api_key: str = Header()) -> int:
    digest = hashlib.sha256(x_api_key.encode()).hexdigest()
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT account_id FROM api_keys WHERE key_hash = :h AND revoked_at IS NULL"), {"h": digest}
        ).first()
    if row is None:
        raise HTTPException(401, "invalid key")
    return row[0]


@app.get("/api/health")
async def health() -> dict:
    """For the benchmark's start-up check only."""
    return {"status": "ok"}


@app.get("/api/v1/workflows")
@limiter.limit("250/second")
def list_workflows(request: Request, account_id: int = Depends(account_of)) -> dict:
    usage.incr(f"usage:{account_id}:{datetime.now(UTC):%Y-%m}")
    return WORKFLOWS
