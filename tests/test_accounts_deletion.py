"""Deleting an account (issue 13): the key is refused at once, the Stripe subscription is canceled,
personal data and jobs are gone, payment event records stay, and the email can sign up again."""

import dataclasses
import secrets
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from levqor_core.accounts.models import Account, SignIn
from levqor_core.apijobs.models import Job
from levqor_core.billing.models import StripeEvent
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey, KeyEvent
from levqor_core.metering.models import UsageDaily
from levqor_core.ops import notion, notion_sync, periodic
from levqor_core.requestlog.models import RequestLogEntry
from levqor_core.webhooks.models import WebhookDelivery, WebhookEndpoint

from .conftest import PASSWORD, csrf_from
from .fakes.stripe_server import FakeStripe
from .helpers import app_on_sqlite, enrol_authenticator, fresh_code, recovery_codes


@pytest.fixture
def stripe_fake(app, monkeypatch):
    with FakeStripe() as server:
        monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_levqor")
        monkeypatch.setitem(app.config, "STRIPE_API_BASE", server.url)
        yield server


def _paying(app, fake, email: str) -> tuple[int, str]:
    """The account on Pro with a live subscription in the fake Stripe, and a payment event on record
    (as the webhook would have left them; tests/test_billing.py drives that path)."""
    sub_id, customer = "sub_" + secrets.token_hex(8), "cus_" + secrets.token_hex(8)
    fake.subscriptions[sub_id] = _subscription(sub_id, customer, "active")
    with app.app_context():
        account = db.session.scalar(sa.select(Account).where(Account.email == email))
        account.tier, account.stripe_customer_id = "pro", customer
        account.stripe_subscription_id, account.subscription_status = sub_id, "active"
        db.session.add(
            StripeEvent(
                id="evt_" + secrets.token_hex(8),
                type="customer.subscription.created",
                account_id=account.id,
                outcome="applied",
                created=datetime.now(UTC),
                received_at=datetime.now(UTC),
            )
        )
        db.session.commit()
        return account.id, sub_id


def _subscription(sub_id: str, customer: str, status: str) -> dict:
    return {"id": sub_id, "object": "subscription", "customer": customer, "status": status, "created": 1}


def _delete(client, password: str, code: str | None = None):
    page = client.get("/developer/account").text
    form = {"password": password, "csrf_token": csrf_from(page)} | ({"code": code} if code is not None else {})
    return client.post("/developer/account/delete", data=form)


def _count(model, **where) -> int:
    query = sa.select(sa.func.count()).select_from(model)
    for column, value in where.items():
        query = query.where(getattr(model, column) == value)
    return db.session.scalar(query)


def test_deleting_an_account_needs_its_password(app, portal):
    dev = portal().sign_up()
    refused = _delete(dev.client, "not my password at all")
    assert refused.status_code == 400 and 'id="delete-error"' in refused.text and 'role="alert"' in refused.text
    with app.app_context():
        assert _count(Account) == 1


def test_deletion_revokes_the_key_at_once_cancels_stripe_removes_data_and_frees_the_email(
    app, client, stripe_fake, portal
):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    account_id, subscription = _paying(app, stripe_fake, dev.email)
    job = client.post("/api/v1/jobs", json={"workflow": "echo", "input": {}}, headers={"x-api-key": key})
    assert job.status_code == 202, job.text
    sandbox_job = client.post(
        "/api/sandbox/v1/jobs", json={"workflow": "echo", "input": {}}, headers={"x-api-key": key}
    )
    assert sandbox_job.status_code == 202, sandbox_job.text
    redis = app.extensions["levqor.redis"]
    assert redis.keys(f"lvq:sbx:{{{account_id}}}:*")  # the sandbox keeps its jobs in Redis

    with app.app_context():
        assert _count(SignIn, account_id=account_id) == 1
    deleted = _delete(dev.client, PASSWORD)
    assert deleted.status_code == 302 and deleted.headers["location"] == "/signup"
    assert client.get("/api/usage", headers={"x-api-key": key}).status_code == 401
    assert stripe_fake.subscriptions[subscription]["status"] == "canceled"
    assert dev.client.get("/developer/api-keys").status_code == 302
    with app.app_context():
        assert _count(Account) == 0
        for model in (Job, ApiKey, KeyEvent, UsageDaily, RequestLogEntry, SignIn):
            assert _count(model, account_id=account_id) == 0, model.__name__
        kept = db.session.scalars(sa.select(StripeEvent)).all()
        assert kept and all(event.account_id is None for event in kept)  # payment records, unlinked
    assert redis.keys(f"lvq:sbx:{{{account_id}}}:*") == []

    again = portal().sign_up(email=dev.email)
    assert again.new_key().status_code == 201
    with app.app_context():
        assert db.session.scalar(sa.select(Account.tier).where(Account.email == dev.email)) == "sandbox"


def test_the_next_notion_sync_removes_the_deleted_accounts_row_and_keeps_rows_made_by_hand(
    app, portal, notion_on, notion_fake
):
    leaving, staying = portal().sign_up(), portal().sign_up()
    created = leaving.new_key()
    assert created.status_code == 201, created.text
    leaving_key = created.json()["id"]
    staying_key = staying.new_key().json()["id"]
    with app.app_context():
        periodic.run("notion-sync")
        source = notion.from_app()
        data_source = source.ensure_database(notion_sync.DATABASE_TITLE, notion_sync.SCHEMA)
        source.create_row(data_source, {"Key ID": notion.title("Team notes: keys of Q4")}, "Key ID")
    assert {row["Key ID"] for row in notion_fake.rows_of("API Keys")} == {
        leaving_key,
        staying_key,
        "Team notes: keys of Q4",
    }

    assert _delete(leaving.client, PASSWORD).status_code == 302
    with app.app_context():
        result = periodic.run("notion-sync")

    assert result["removed"] == 1 and result["total"] == 1
    assert {row["Key ID"] for row in notion_fake.rows_of("API Keys")} == {staying_key, "Team notes: keys of Q4"}
    trashed = [page for page in notion_fake.pages.values() if page["in_trash"]]
    assert [notion.row_title(page, "Key ID") for page in trashed] == [leaving_key]


def test_a_sync_that_would_remove_more_rows_than_allowed_removes_none_and_says_so(
    app, portal, notion_on, notion_fake, monkeypatch, caplog
):
    """What an app pointed at the wrong (say, an empty) database would do: every row looks orphaned."""
    developers = [portal().sign_up() for _ in range(3)]
    key_ids = {dev.new_key().json()["id"] for dev in developers}
    with app.app_context():
        periodic.run("notion-sync")
    assert {row["Key ID"] for row in notion_fake.rows_of("API Keys")} == key_ids
    for dev in developers[:2]:
        assert _delete(dev.client, PASSWORD).status_code == 302

    monkeypatch.setitem(app.config, "NOTION_SYNC_MAX_REMOVALS", 1)
    with app.app_context():
        held = periodic.run("notion-sync")
    assert held["removed"] == 0 and held["removals_held"] == 2
    assert {row["Key ID"] for row in notion_fake.rows_of("API Keys")} == key_ids  # nothing trashed
    assert "more than the 1 a run may remove; none removed" in caplog.text

    monkeypatch.setitem(app.config, "NOTION_SYNC_MAX_REMOVALS", 2)  # the operator checked, and allows it
    with app.app_context():
        done = periodic.run("notion-sync")
    assert done["removed"] == 2 and done["removals_held"] == 0
    assert len(notion_fake.rows_of("API Keys")) == 1


@pytest.mark.parametrize("status", ["incomplete", "paused", "unpaid"])
def test_a_subscription_that_could_still_bill_is_canceled_too(app, stripe_fake, portal, status):
    """An incomplete subscription may still be paid and a paused one resume: either would bill an
    account that is gone."""
    dev = portal().sign_up()
    account_id, subscription = _paying(app, stripe_fake, dev.email)
    with app.app_context():
        db.session.get(Account, account_id).subscription_status = status
        db.session.commit()
    assert _delete(dev.client, PASSWORD).status_code == 302
    assert stripe_fake.subscriptions[subscription]["status"] == "canceled"


def test_a_subscription_not_on_record_yet_is_canceled_too(app, stripe_fake, portal):
    """A checkout paid just before the deletion, its webhook still on its way: the account does not
    know that subscription, Stripe's customer does."""
    dev = portal().sign_up()
    account_id, subscription = _paying(app, stripe_fake, dev.email)
    with app.app_context():
        customer = db.session.get(Account, account_id).stripe_customer_id
    stripe_fake.subscriptions["sub_late"] = _subscription("sub_late", customer, "incomplete")
    stripe_fake.subscriptions["sub_other"] = _subscription("sub_other", "cus_someone_else", "active")
    assert _delete(dev.client, PASSWORD).status_code == 302
    status = {sub_id: sub["status"] for sub_id, sub in stripe_fake.subscriptions.items()}
    assert status == {subscription: "canceled", "sub_late": "canceled", "sub_other": "active"}


def test_a_subscription_stripe_no_longer_knows_does_not_stop_the_deletion(app, stripe_fake, portal):
    dev = portal().sign_up()
    account_id, subscription = _paying(app, stripe_fake, dev.email)
    del stripe_fake.subscriptions[subscription]  # removed in Stripe's dashboard, say
    assert _delete(dev.client, PASSWORD).status_code == 302
    with app.app_context():
        assert _count(Account) == 0


def test_when_stripe_does_not_answer_nothing_is_deleted_and_the_page_says_so(app, client, stripe_fake, portal):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    account_id, subscription = _paying(app, stripe_fake, dev.email)
    stripe_fake.close()  # Stripe unreachable: the cancel cannot go through

    refused = _delete(dev.client, PASSWORD)
    assert refused.status_code == 502 and "Stripe did not answer" in refused.text
    assert "nothing was deleted" in refused.text
    assert client.get("/api/usage", headers={"x-api-key": key}).status_code == 200  # the key still works
    assert dev.client.get("/developer/api-keys").status_code == 200  # still signed in
    with app.app_context():
        account = db.session.get(Account, account_id)
        assert account.stripe_subscription_id == subscription and account.subscription_status == "active"
        assert _count(ApiKey, account_id=account_id, revoked_at=None) == 1


def test_with_two_factor_on_deletion_wants_a_code_too(app, portal):
    """A stolen session plus a phished password deletes nothing: the second factor is asked as at
    re-authentication, and a recovery code does as well (and is spent)."""
    dev = portal().sign_up()
    totp = enrol_authenticator(dev.client)
    codes = recovery_codes(dev.client)
    page = dev.client.get("/developer/account").text
    assert 'id="delete-code"' in page

    password_only = _delete(dev.client, PASSWORD)
    assert password_only.status_code == 400 and "Nothing was deleted" in password_only.text
    wrong_code = _delete(dev.client, PASSWORD, "000000")
    assert wrong_code.status_code == 400 and "Nothing was deleted" in wrong_code.text
    wrong_password = _delete(dev.client, "not my password at all", fresh_code(totp))
    assert wrong_password.status_code == 400 and "That password is not this account" in wrong_password.text
    with app.app_context():
        assert _count(Account) == 1

    assert _delete(dev.client, PASSWORD, codes[0]).status_code == 302
    with app.app_context():
        assert _count(Account) == 0


def test_password_guesses_at_deletion_are_limited_like_the_code_pages(app, portal):
    """A stolen session cookie cannot use the deletion form to guess the password faster than log-in."""
    dev = portal().sign_up()
    answers = [_delete(dev.client, f"guess number {n}").status_code for n in range(6)]
    assert answers == [400] * 5 + [429]
    assert _delete(dev.client, PASSWORD).status_code == 429  # even the right one, until the minute ends
    with app.app_context():
        assert _count(Account) == 1


def test_deletion_on_sqlite_the_embedded_default_leaves_no_row_naming_the_account(tmp_path, redis_server):
    """SQLite enforces no ON DELETE rule: every row naming the account must go (or, for payment
    records, lose the link) because the deletion removes it, in every table that has account_id."""
    from flask_migrate import upgrade

    from levqor_core.accounts import deletion
    from levqor_core.keys import service as keys
    from levqor_core.webhooks import service as webhooks

    app = app_on_sqlite(tmp_path / "embedded.db", redis_server)
    now = datetime.now(UTC)
    with app.app_context():
        upgrade()
        leaving, staying = (Account(email=f"{n}@example.com", password_hash="x", tier="pro") for n in ("go", "stay"))
        db.session.add_all([leaving, staying])
        db.session.commit()
        for account in (leaving, staying):
            key = keys.issue(account, keys.Actor(email=account.email)).record
            endpoint, _ = webhooks.create_endpoint(
                account, "http://127.0.0.1:9/hook", ["job.succeeded"], sandbox=False, secret_key="k", allow_private=True
            )
            webhooks.ping(endpoint)
            db.session.add_all(
                [
                    SignIn(account_id=account.id, ip="192.0.2.1", method="password"),
                    UsageDaily(key_id=key.id, account_id=account.id, day=now.date(), calls=3, sandbox_calls=0),
                    StripeEvent(
                        id=f"evt_{account.id}", type="x", account_id=account.id, outcome="applied", created=now
                    ),
                    RequestLogEntry(
                        account_id=account.id,
                        at=now,
                        request_id=secrets.token_hex(8),
                        key_id=key.id,
                        method="GET",
                        path="/api/v1/workflows",
                        status=200,
                        latency_ms=1.0,
                        sandbox=False,
                    ),
                ]
            )
            db.session.commit()
        gone_id, kept_id = leaving.id, staying.id
        deletion.delete(leaving, keys.Actor(email="go@example.com"))

        tables = [t for t in db.metadata.sorted_tables if "account_id" in t.c]
        assert len(tables) >= 9
        for table in tables:
            left = db.session.scalar(sa.select(sa.func.count()).select_from(table).where(table.c.account_id == gone_id))
            kept = db.session.scalar(sa.select(sa.func.count()).select_from(table).where(table.c.account_id == kept_id))
            assert left == 0, table.name
            if table.name in ("webhook_endpoints", "sign_ins", "usage_daily", "stripe_events", "request_log"):
                assert kept == 1, table.name  # the other account's rows stay
        assert db.session.get(StripeEvent, f"evt_{gone_id}").account_id is None  # the payment record, unlinked
        endpoints = sa.select(WebhookEndpoint.id)
        orphans = (
            sa.select(sa.func.count()).select_from(WebhookDelivery).where(WebhookDelivery.endpoint_id.not_in(endpoints))
        )
        assert db.session.scalar(orphans) == 0
        assert db.session.get(Account, gone_id) is None


def test_on_sqlite_a_deleted_accounts_id_is_never_given_to_the_next_sign_up(tmp_path, redis_server):
    """Redis keeps the day's key creation, usage and limits by account id: an id handed out again
    (SQLite reused the highest one) gave the next sign-up the deleted account's spent limits."""
    from flask_migrate import upgrade

    from levqor_core.accounts import deletion
    from levqor_core.accounts import service as accounts
    from levqor_core.keys import service as keys

    app = app_on_sqlite(tmp_path / "embedded.db", redis_server)
    with app.app_context():
        upgrade()
        gone = accounts.create("first@example.com", PASSWORD)
        gone_id = gone.id
        deletion.delete(gone, keys.Actor(email=gone.email))
        assert accounts.create("next@example.com", PASSWORD).id > gone_id


def test_every_domain_registers_its_deletion_step_in_the_app(app):
    from levqor_core.accounts import deletion

    assert [s.name for s in deletion.steps()] == [
        "stop-billing",
        "revoke-keys",
        "forget-cached-keys",
        "forget-sandbox-jobs",
        "job-rows",
        "key-rows",
        "quota-alert-rows",
        "request-log-rows",
        "sign-ins",
        "unlink-stripe-events",
        "usage-rows",
        "webhook-rows",
    ]
    assert deletion.unclaimed_tables() == set()


def test_a_table_no_step_claims_refuses_the_deletion_before_anything_changes(app, make_account, monkeypatch):
    from levqor_core.accounts import deletion
    from levqor_core.keys import service as keys

    account_id, key = make_account()
    rows_step = next(s for s in deletion.steps() if s.name == "usage-rows")
    monkeypatch.setitem(deletion._steps, "usage-rows", dataclasses.replace(rows_step, tables=()))
    with app.app_context():
        account = db.session.get(Account, account_id)
        with pytest.raises(deletion.UnclaimedTables, match="usage_daily"):
            deletion.delete(account, keys.Actor(email=account.email))
        assert db.session.get(Account, account_id) is not None
        assert db.session.scalar(sa.select(ApiKey.status).where(ApiKey.account_id == account_id)) == "active"
