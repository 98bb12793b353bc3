"""Quota alerts: an account crossing 80 % and 100 % of its quota is told once per period per threshold.

Detection inserts a `quota_alerts` row; the unique (account, period, threshold) constraint makes
"once" exact even when two runs overlap. Delivery is separate and at-least-once per channel:
a row stays pending until the developer's email and the team notice (a row in the Notion
"Alerts" database and/or a POST to ALERT_WEBHOOK_URL) have both gone out, so a failed send is
retried by the next run instead of being lost.
"""

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import redis
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.metering import counters as metering
from levqor_core.ops import notion as notion_api
from levqor_core.ops.models import QuotaAlert
from levqor_core.outbound_mail import EmailSender, email_sender
from levqor_core.webhooks import dispatch
from levqor_core.webhooks import service as webhooks

log = logging.getLogger(__name__)

THRESHOLDS = (80, 100)
QUOTA_EVENTS = {80: "quota.warning", 100: "quota.exceeded"}  # webhook event per threshold
ALERTS_DATABASE = "Alerts"
ALERTS_SCHEMA = {
    "Alert": {"title": {}},
    **notion_api.ACCOUNT_PROPERTIES,
    "Threshold": {"number": {"format": "percent"}},
    "Calls Used": {"number": {"format": "number"}},
    "Quota": {"number": {"format": "number"}},
    "Period": {"rich_text": {}},
    "Raised At": {"date": {}},
}


# -- detection -------------------------------------------------------------------------------------


def detect(r: redis.Redis, now: datetime) -> list[QuotaAlert]:
    """Record every threshold crossed this period that has no alert yet; returns the new rows."""
    limited = [name for name, t in tiers.TIERS.items() if t.monthly_quota is not None]
    accounts = db.session.scalars(sa.select(Account).where(Account.tier.in_(limited))).all()
    if not accounts:
        return []
    periods = [metering.current_period(a, now) for a in accounts]
    live = metering.get_many(r, [metering.usage_key(a.id, p) for a, p in zip(accounts, periods, strict=True)])
    created, deliveries = [], []
    for account, period, counter in zip(accounts, periods, live, strict=True):
        quota = tiers.get(account.tier).monthly_quota
        used = int(counter) if counter is not None else metering.persisted_period_calls(account.id, period)
        crossed = [t for t in THRESHOLDS if used * 100 >= t * quota]
        new = [_insert_once(account.id, period.id, t, used, quota) for t in crossed]
        new = [row for row in new if row is not None]
        for lower in new[:-1]:
            lower.status = "superseded"  # crossed together: one email (the highest) is enough
        # The same crossings, once per period each, to the developer's webhooks; recorded in this
        # transaction (not through webhooks.events.emit, which commits on its own) so an alert row
        # and its deliveries commit together.
        for alert in new:
            deliveries += webhooks.record_event(
                account.id, QUOTA_EVENTS[alert.threshold], _quota_event_data(alert, period), sandbox=False
            )
        created.extend(new)
    db.session.commit()
    dispatch.enqueue(deliveries)
    return created


def _quota_event_data(alert: QuotaAlert, period: metering.Period) -> dict:
    return {
        "calls_used": alert.calls_used,
        "quota": alert.quota,
        "threshold_percent": alert.threshold,
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat(),
    }


def _insert_once(account_id: int, period_id: str, threshold: int, used: int, quota: int) -> QuotaAlert | None:
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(QuotaAlert).values(
        account_id=account_id,
        period_id=period_id,
        threshold=threshold,
        calls_used=used,
        quota=quota,
        status="pending",
        created_at=datetime.now(UTC),
        attempts=0,
    )
    stmt = stmt.on_conflict_do_nothing(index_elements=["account_id", "period_id", "threshold"])
    new_id = db.session.execute(stmt.returning(QuotaAlert.id)).scalar()
    return db.session.get(QuotaAlert, new_id) if new_id is not None else None


# -- delivery --------------------------------------------------------------------------------------


def _email_text(alert: QuotaAlert, account: Account) -> tuple[str, str]:
    tier = tiers.get(account.tier)
    if alert.threshold >= 100:
        subject = f"You have used all {alert.quota:,} calls of your {tier.label} quota"
        lead = "Calls to the v1 API are refused with 429 until the period resets or you upgrade."
    else:
        subject = f"You have used {alert.threshold} % of your {tier.label} quota"
        lead = "When the quota runs out, calls to the v1 API are refused with 429 until the period resets."
    body = (
        f"Hello,\n\nyour Levqor account has made {alert.calls_used:,} of its {alert.quota:,} calls "
        f"this period.\n{lead}\n\nUsage and upgrades: {current_app.config['PUBLIC_BASE_URL']}/developer\n"
    )
    return subject, body


def _team_notice(alert: QuotaAlert, account: Account) -> dict:
    return {
        "event": "quota_threshold_crossed",
        "account_id": account.id,
        "tier": account.tier,
        "threshold": alert.threshold,
        "calls_used": alert.calls_used,
        "quota": alert.quota,
        "period": alert.period_id,
        "raised_at": alert.created_at.isoformat(),
    }


def deliver(sender: EmailSender, notion: "notion_api.Notion | None", webhook_url: str) -> dict:
    """Send every pending alert on every channel not yet done; failures stay pending."""
    counts = {"emailed": 0, "team_notified": 0, "failed": 0}
    team_channels = bool(notion) or bool(webhook_url)
    alerts_ds = None
    query = sa.select(QuotaAlert).where(QuotaAlert.status == "pending").order_by(QuotaAlert.id)
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # overlapping runs deliver disjoint rows
    for alert in db.session.scalars(query).all():
        account = db.session.get(Account, alert.account_id)
        try:
            if alert.email_sent_at is None:
                sender.send(account.email, *_email_text(alert, account))
                alert.email_sent_at = datetime.now(UTC)
                counts["emailed"] += 1
            if alert.team_sent_at is None and team_channels:
                notice = _team_notice(alert, account)
                if notion is not None:
                    alerts_ds = alerts_ds or notion.ensure_database(ALERTS_DATABASE, ALERTS_SCHEMA)
                    _notion_row(notion, alerts_ds, alert, notice)
                if webhook_url:
                    httpx.post(webhook_url, json=notice, timeout=10).raise_for_status()
                alert.team_sent_at = datetime.now(UTC)
                counts["team_notified"] += 1
            alert.status = "sent"
        except Exception as err:  # any channel: keep the row pending for the next run
            alert.attempts += 1
            alert.last_error = str(err)[:500]
            counts["failed"] += 1
            log.warning("quota alert %s not delivered yet: %s", alert.id, err)
        db.session.commit()
    if not team_channels and counts["emailed"]:
        log.info("no team channel for quota alerts (NOTION_TOKEN or ALERT_WEBHOOK_URL): only developers emailed")
    return counts


def _notion_row(notion: "notion_api.Notion", ds_id: str, alert: QuotaAlert, notice: dict) -> None:
    name = f"Account {notice['account_id']} at {alert.threshold}% ({alert.period_id})"
    if notion.find_row(ds_id, "Alert", name):
        return  # written by a run that failed later on another channel
    notion.create_row(
        ds_id,
        {
            "Alert": notion_api.title(name),
            "User ID": notion_api.rich_text(str(notice["account_id"])),
            "Tier": notion_api.select(notice["tier"]),
            "Threshold": notion_api.number(alert.threshold / 100),
            "Calls Used": notion_api.number(alert.calls_used),
            "Quota": notion_api.number(alert.quota),
            "Period": notion_api.rich_text(alert.period_id),
            "Raised At": notion_api.date_value(alert.created_at.replace(microsecond=0)),
        },
        "Alert",
    )


def run(r: redis.Redis, progress: Callable | None = None, now: datetime | None = None) -> dict:
    """Detect new crossings, then deliver everything pending."""
    progress = progress or (lambda done, total, counts: None)
    metering.flush_usage(r)
    new = detect(r, now or datetime.now(UTC))
    progress(1, 2, {"phase": "delivering", "new_alerts": len(new)})
    config = current_app.config
    notion = notion_api.from_app() if notion_api.is_configured() else None
    counts = deliver(email_sender(), notion, config.get("ALERT_WEBHOOK_URL", ""))
    progress(2, 2, {"phase": "done", "new_alerts": len(new)})
    return {"new_alerts": len(new)} | counts
