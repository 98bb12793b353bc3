"""Deleting an account (README "Accounts": what goes, what stays and why).

Order matters: Stripe first (open checkouts expired, subscriptions canceled: a failure there
stops before anything is lost, and nobody is charged for an account that no longer exists), then
the keys (the next call is a 401 in every process), then the sandbox's jobs in Redis, then the rows.
Its usage counters still in Redis are not flushed here (its usage rows go anyway): the flusher drops
the counters of deleted accounts.
"""

import logging

import redis
import sqlalchemy as sa
from flask import current_app

from levqor_core.accounts.models import Account, SignIn
from levqor_core.apijobs import sandbox
from levqor_core.apijobs.models import Job
from levqor_core.billing import checkout as billing
from levqor_core.billing.models import StripeEvent
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.keys.models import ApiKey, KeyEvent
from levqor_core.limits import key_cache
from levqor_core.metering.models import UsageDaily
from levqor_core.ops.models import QuotaAlert
from levqor_core.requestlog.models import RequestLogEntry
from levqor_core.webhooks.models import WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

# Rows that name the account and go with it. Its webhook endpoints and their deliveries go too, and
# its stripe_events rows stay with the account link cleared (the record of each payment event: id,
# type, outcome, time). Both are done here, not left to the foreign keys' ON DELETE rules: SQLite
# (the embedded default) does not enforce them.
OWNED = (Job, KeyEvent, ApiKey, UsageDaily, QuotaAlert, RequestLogEntry, SignIn)


def delete(account: Account, actor: keys.Actor) -> None:
    """Delete the account and everything personal it owns. A billing error is raised before anything
    of ours changes (open checkouts may already have been expired: harmless, a new one can be started)."""
    if billing.stop_billing(account):
        db.session.commit()
    keys.revoke(account, actor)
    key_cache.forget_account(account.id)
    r = current_app.extensions["levqor.redis"]
    try:
        sandbox.forget_account(r, account.id)
    except redis.RedisError as err:  # the flusher drops counters of deleted accounts anyway
        log.warning("account %s deleted while Redis is unavailable: %s", account.id, err)
    account_id = account.id
    endpoints = sa.select(WebhookEndpoint.id).where(WebhookEndpoint.account_id == account_id)
    db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id.in_(endpoints)))
    db.session.execute(sa.delete(WebhookEndpoint).where(WebhookEndpoint.account_id == account_id))
    db.session.execute(sa.update(StripeEvent).where(StripeEvent.account_id == account_id).values(account_id=None))
    for model in OWNED:
        db.session.execute(sa.delete(model).where(model.account_id == account_id))
    db.session.delete(account)
    db.session.commit()
    log.info("account %s deleted", account_id)
