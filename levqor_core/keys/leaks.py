"""Keys found in public: a GitHub secret-scanning report (its signature already checked) revokes
every live or expiring key in it at once, and GitHub gets a label per token.

A public leak is an emergency, so there is no grace period: the key stops in the report's own
transaction, its "revoked" event carries the URL where it was found, and its cached record is
dropped, so its next call is a 401. Its owner then hears of it (a `key.leaked` webhook event and a
mail saying where, and how to replace it now) from a small pool, after the answer.

The answer must not tell a live key from an unknown one by its timing, so every report runs the
same statements whatever it holds: each token checked and hashed, then for the whole report one
lock of the accounts involved, one UPDATE (the revocation), one INSERT ... SELECT (the audit rows)
and one SELECT (the labels), one commit, every token's cached record dropped, the notices handed
to the pool. A live key adds only the rows written. Sending the same report again changes
nothing: only a key still usable is revoked, by an UPDATE that a second report (even a
concurrent one) finds done.
"""

import logging
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from threading import Lock

import sqlalchemy as sa
from flask import current_app

from levqor_core import signals
from levqor_core.accounts import mail as account_mail
from levqor_core.accounts.models import Account
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys.format import hash_key, is_well_formed
from levqor_core.keys.models import LEAK_ACTOR, ApiKey, KeyEvent
from levqor_core.webhooks import events as webhook_events

log = logging.getLogger(__name__)

TRUE_POSITIVE, FALSE_POSITIVE = "true_positive", "false_positive"
MAX_URL_CHARS = 2048
NOTICE_DELAY_SECONDS = 0.2

_notices = ThreadPoolExecutor(max_workers=1, thread_name_prefix="key-leak-notices")
_in_flight: set[Future] = set()
_in_flight_lock = Lock()


@dataclass(frozen=True)
class Revoked:
    key_id: str
    account_id: int
    url: str | None


def report(matches: list[dict], now: datetime | None = None) -> list[dict]:
    """Revoke the live and expiring keys among GitHub's matches (`token`, `type`, `url`, `source`);
    GitHub's feedback, one entry per match in its order."""
    if not matches:
        return []
    now = now or utcnow()
    tokens = [str(m.get("token") or "") for m in matches]
    # Every token is checked and hashed, a well-formed one or not: the same work for each.
    well_formed = [is_well_formed(t) for t in tokens]
    hashes = [hash_key(t) for t in tokens]
    unique = sorted(set(hashes))
    url_of = {}
    for h, m in zip(hashes, matches, strict=True):
        url_of.setdefault(h, (str(m.get("url") or "")[:MAX_URL_CHARS]) or None)

    # A roll (keys.service) locks its account's row before it reads the active key; so does this,
    # so a roll never puts a key just revoked as leaked back in a grace period (locked in id order:
    # two reports never wait on each other in a circle).
    db.session.execute(
        sa.select(Account.id)
        .where(Account.id.in_(sa.select(ApiKey.account_id).where(ApiKey.key_hash.in_(unique))))
        .order_by(Account.id)
        .with_for_update()
    )
    usable = sa.or_(ApiKey.status == "active", sa.and_(ApiKey.status == "expiring", ApiKey.expires_at > now))
    rows = db.session.execute(
        sa.update(ApiKey)
        .where(ApiKey.key_hash.in_(unique), usable)
        .values(status="revoked", revoked_at=now, leaked_at=now)
        .returning(ApiKey.id, ApiKey.account_id, ApiKey.key_hash)
        .execution_options(synchronize_session=False)
    ).all()
    # Revoked by this report or an earlier one: GitHub gets the same label each time it asks.
    leaked = set(
        db.session.scalars(sa.select(ApiKey.key_hash).where(ApiKey.key_hash.in_(unique), ApiKey.leaked_at.isnot(None)))
    )
    revoked = [Revoked(key_id, account_id, url_of[key_hash]) for key_id, account_id, key_hash in rows]
    # The audit rows, by one statement run for every report (inserting none for an unknown key).
    where_found = sa.case({h: sa.literal(u, sa.String) for h, u in url_of.items()}, value=ApiKey.key_hash, else_=None)
    db.session.execute(
        sa.insert(KeyEvent).from_select(
            ["account_id", "key_id", "event", "at", "actor", "emergency", "leak_url"],
            sa.select(
                ApiKey.account_id,
                ApiKey.id,
                sa.literal("revoked"),
                sa.literal(now, KeyEvent.at.type),
                sa.literal(LEAK_ACTOR),
                sa.false(),
                where_found,
            ).where(ApiKey.id.in_([r.key_id for r in revoked])),
        )
    )
    db.session.commit()
    signals.keys_retired.send(None, key_hashes=unique)  # every token's, found or not
    for account_id in {r.account_id for r in revoked}:
        signals.account_keys_changed.send(account_id)
    _hand_over(current_app._get_current_object(), revoked, now)
    if revoked:
        log.warning("revoked %d leaked key(s) reported by GitHub: %s", len(revoked), [r.key_id for r in revoked])
    return [
        {
            "token_raw": token,
            "token_type": str(match.get("type") or ""),
            "label": TRUE_POSITIVE if ok and h in leaked else FALSE_POSITIVE,
        }
        for token, match, ok, h in zip(tokens, matches, well_formed, hashes, strict=True)
    ]


@dataclass(frozen=True)
class Leak:
    hint: str
    url: str | None
    at: datetime


def unanswered_leak(account_id: int) -> Leak | None:
    """The account's latest key revoked as leaked since its last emergency replacement, if any."""
    last_replacement = db.session.scalar(
        sa.select(sa.func.max(KeyEvent.at)).where(
            KeyEvent.account_id == account_id, KeyEvent.emergency.is_(True), KeyEvent.event.in_(("rolled", "created"))
        )
    )
    query = (
        sa.select(ApiKey.hint, KeyEvent.leak_url, KeyEvent.at)
        .join(ApiKey, ApiKey.id == KeyEvent.key_id)
        .where(KeyEvent.account_id == account_id, KeyEvent.actor == LEAK_ACTOR, KeyEvent.event == "revoked")
        .order_by(KeyEvent.at.desc(), KeyEvent.id.desc())
        .limit(1)
    )
    if last_replacement is not None:
        query = query.where(KeyEvent.at > last_replacement)
    row = db.session.execute(query).first()
    return Leak(*row) if row else None


def replacement_owed(account_id: int) -> bool:
    """A key of this account leaked after its last emergency replacement: "Replace now" is open to
    it whatever today's key creations and replacements were."""
    return unanswered_leak(account_id) is not None


def _hand_over(app, revoked: list[Revoked], now: datetime) -> None:
    # Handed over for every report, an empty one too: the same work whatever the report held.
    future = _notices.submit(_notify, app, revoked, now, time.monotonic() + NOTICE_DELAY_SECONDS)
    with _in_flight_lock:
        _in_flight.add(future)
    future.add_done_callback(_done)


def _done(future: Future) -> None:
    with _in_flight_lock:
        _in_flight.discard(future)


def wait_until_notified(timeout: float = 30) -> None:
    """Wait for the notices handed over so far (webhook events recorded, mail handed to its outbox)."""
    with _in_flight_lock:
        pending = list(_in_flight)
    wait(pending, timeout=timeout)


def _notify(app, revoked: list[Revoked], now: datetime, due: float) -> None:
    if not revoked:
        return
    # After the answer has gone: started at once, this work shared the CPU with the rest of the
    # answer and made a live key's ~5 % slower than an unknown one's (bench/secret_scanning_timing.py).
    time.sleep(max(0.0, due - time.monotonic()))
    by_account: dict[int, list[Revoked]] = defaultdict(list)
    for r in revoked:
        by_account[r.account_id].append(r)
    with app.app_context():
        for account_id, found in by_account.items():
            try:
                _notify_account(account_id, found, now)
            except Exception:  # one owner's notice failing must not stop the others'
                log.exception("could not tell account %s of its leaked key(s)", account_id)
                db.session.rollback()


def _notify_account(account_id: int, found: list[Revoked], now: datetime) -> None:
    account = db.session.get(Account, account_id)
    keys = {k.id: k for k in db.session.scalars(sa.select(ApiKey).where(ApiKey.id.in_([r.key_id for r in found])))}
    for r in found:
        key = keys[r.key_id]
        # Metadata, as `key.revoked` sends, and where it was found; never the key or its hash.
        data = key.to_dict(account.tier) | {"leak_url": r.url}
        webhook_events.emit(account_id, "key.leaked", data)
    subject, body = leak_mail([(keys[r.key_id].hint, r.url) for r in found], now, current_app.config["PUBLIC_BASE_URL"])
    account_mail.send(account.email, subject, body)


def leak_mail(found: list[tuple[str, str | None]], now: datetime, base_url: str) -> tuple[str, str]:
    """The owner's mail: which key(s), where each was found, that they no longer work, and how to
    replace them now."""
    hints = ", ".join(hint for hint, _ in found)
    plural = len(found) > 1
    were = "were" if plural else "was"
    subject = f"Your Levqor API key{'s' if plural else ''} {hints} {were} found in public and revoked"
    places = "\n".join(f"- {hint}, at {url or '(no URL given)'}" for hint, url in found)
    body = (
        f"GitHub's secret scanning found your Levqor API key{'s' if plural else ''} in public:\n\n{places}\n\n"
        f"{'They were' if plural else 'It was'} revoked at once, at {now:%Y-%m-%d %H:%M} UTC: every call made "
        f"with {'them' if plural else 'it'} is now refused (401). Anyone could have copied "
        f"{'them' if plural else 'it'}.\n\n"
        "Get a new key now: sign in and use \u201cReplace now\u201d (you are asked for your password again):\n"
        f"  {base_url}/developer/api-keys/replace\n"
        "It issues a new key at once, whatever keys you created or replaced today.\n\n"
        "Then:\n"
        "- put the new key where your integration reads it, from an environment variable or a secret store;\n"
        "- remove the old key from the repository and its history (it stays revoked whatever you do);\n"
        f"- look for calls you did not make in your request log: {base_url}/developer/logs\n\n"
        f"The revocation is in your key activity: {base_url}/developer/api-keys\n"
    )
    return subject, body
