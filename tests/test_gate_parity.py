"""The gate's rules exist twice: gate.lua (Redis answers) and limits/degraded.py (it does not).
The same cases run through both must admit and refuse alike, with the same limits and remainders."""

from datetime import UTC, date, datetime, timedelta

import pytest

from levqor_core import problems, tiers
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys import format as keyfmt
from levqor_core.keys import service as keys
from levqor_core.keys.models import ApiKey
from levqor_core.metering.models import UsageDaily

from . import both_backends

cx, app = both_backends.fixtures()  # every test on one Redis and on a Redis Cluster

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp()


def _outcome(admit, key_hash: str, area: str, now: float) -> tuple:
    """What a call got: admitted with its limit and remainder, or the problem refusing it."""
    try:
        admitted = admit(key_hash, area, now, None)
    except problems.Problem as refusal:
        headers = refusal.headers or {}
        outcome = ("refused", refusal.slug, headers.get("X-RateLimit-Limit"), headers.get("X-RateLimit-Remaining"))
    else:
        headers = admitted["headers"]
        outcome = ("admitted", admitted["account_id"], headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"])
    _headers_seen.append(dict(headers))  # every rate-limit header too, compared in _both
    return outcome


_headers_seen: list[dict] = []


def _both(app, key_hash: str, calls: list[tuple[str, float]]) -> tuple[list, list]:
    """The calls (area, at) through gate.lua, then the same through outage mode on the same data."""
    gate = app.extensions["levqor.gate"]
    _headers_seen.clear()
    with app.app_context():
        lua = [_outcome(lambda h, a, n, c: gate.authorize_hash(h, a, n, c), key_hash, a, t) for a, t in calls]
        lua_headers = list(_headers_seen)
        _headers_seen.clear()
        degraded = [_outcome(gate.outage.admit, key_hash, a, t) for a, t in calls]
    assert lua_headers == _headers_seen, "the same call got other rate-limit headers without Redis"
    return lua, degraded


def _account(app, tier: str = "sandbox", period_days_ago: int | None = None) -> tuple[int, str, str]:
    """An account with a key: its id, the key's id and the key's hash."""
    with app.app_context():
        account = Account(email=f"parity-{datetime.now().timestamp()}@example.com", password_hash="x", tier=tier)
        if period_days_ago is not None:
            account.period_start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=period_days_ago, hours=3)
            account.period_end = account.period_start + timedelta(days=30)
        db.session.add(account)
        db.session.commit()
        issued = keys.issue(account, keys.Actor(email="test"))
        return account.id, issued.record.id, keyfmt.hash_key(issued.raw)


def _persist(app, account_id: int, key_id: str, day: date, calls: int = 0, sandbox_calls: int = 0) -> None:
    with app.app_context():
        db.session.add(
            UsageDaily(key_id=key_id, account_id=account_id, day=day, calls=calls, sandbox_calls=sandbox_calls)
        )
        db.session.commit()


def _today() -> date:
    return datetime.fromtimestamp(NOW, UTC).date()


def test_unknown_and_revoked_keys(app):
    account_id, _, key_hash = _account(app)
    unknown = keyfmt.hash_key(keyfmt.generate())
    lua, degraded = _both(app, unknown, [("v1", NOW)])
    assert lua == degraded == [("refused", "invalid-api-key", None, None)]
    with app.app_context():
        keys.revoke(db.session.get(Account, account_id), keys.Actor(email="test"))
    lua, degraded = _both(app, key_hash, [("v1", NOW)])
    assert lua == degraded == [("refused", "invalid-api-key", None, None)]


def test_a_rolled_key_past_its_grace_period(app):
    account_id, old_key_id, key_hash = _account(app)
    with app.app_context():
        keys.issue(db.session.get(Account, account_id), keys.Actor(email="test"), timedelta(hours=1))
        expires = db.session.get(ApiKey, old_key_id).expires_at.timestamp()
    lua, degraded = _both(app, key_hash, [("v1", expires - 1), ("v1", expires + 1)])
    assert lua == degraded
    assert lua[0][0] == "admitted" and lua[1][:2] == ("refused", "invalid-api-key")


def test_the_burst_limit(app):
    _, _, key_hash = _account(app)
    burst = tiers.get("sandbox").burst_per_second
    calls = [("meta", NOW + 0.01 * i) for i in range(burst + 1)] + [("meta", NOW + 1.5)]
    lua, degraded = _both(app, key_hash, calls)
    assert [o[:2] for o in lua] == [o[:2] for o in degraded]
    assert [o[0] for o in lua] == ["admitted"] * burst + ["refused", "admitted"]
    assert lua[burst][1] == "burst-limit-exceeded"


@pytest.mark.parametrize("area", ["v1", "sandbox"])
def test_the_quota_and_the_sandbox_cap_with_persisted_usage(app, area):
    account_id, key_id, key_hash = _account(app)
    limit = tiers.get("sandbox").monthly_quota if area == "v1" else tiers.SANDBOX_DAILY_LIMIT
    used = {"calls": limit - 2} if area == "v1" else {"sandbox_calls": limit - 2}
    _persist(app, account_id, key_id, _today(), **used)
    calls = [(area, NOW + i) for i in range(3)]
    lua, degraded = _both(app, key_hash, calls)
    assert lua == degraded
    assert [o[0] for o in lua] == ["admitted", "admitted", "refused"]
    assert [o[3] for o in lua[:2]] == ["1", "0"] and lua[2][2:] == (str(limit), "0")
    assert lua[2][1] == ("monthly-quota-exceeded" if area == "v1" else "sandbox-daily-cap-exceeded")


def test_a_paid_period_counts_only_its_own_days(app):
    account_id, key_id, key_hash = _account(app, tier="pro", period_days_ago=5)
    quota = tiers.get("pro").monthly_quota
    before = datetime.fromtimestamp(NOW, UTC).date() - timedelta(days=10)
    _persist(app, account_id, key_id, before, calls=quota)  # the previous period: not counted
    _persist(app, account_id, key_id, _today() - timedelta(days=2), calls=quota - 1)
    lua, degraded = _both(app, key_hash, [("v1", NOW), ("v1", NOW + 1)])
    assert lua == degraded
    assert lua[0] == ("admitted", account_id, str(quota), "0")
    assert lua[1] == ("refused", "monthly-quota-exceeded", str(quota), "0")


def test_meta_calls_are_never_metered(app):
    account_id, key_id, key_hash = _account(app)
    _persist(app, account_id, key_id, _today(), calls=tiers.get("sandbox").monthly_quota)
    lua, degraded = _both(app, key_hash, [("meta", NOW), ("v1", NOW + 1)])
    assert lua == degraded
    assert lua[0][0] == "admitted" and lua[1][:2] == ("refused", "monthly-quota-exceeded")
