"""Deleting an account (issue 13): the key is refused at once, the Stripe subscription is canceled,
personal data and jobs are gone, payment event records stay, and the email can sign up again."""

import sqlalchemy as sa

from levqor_core.accounts.models import Account
from levqor_core.apijobs.models import Job
from levqor_core.billing.models import StripeEvent
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey, KeyEvent
from levqor_core.metering.models import UsageDaily

from . import test_billing
from .conftest import PASSWORD, csrf_from

# The billing tests' fake Stripe and paying developer, as fixtures here too.
fake, catalogue, subscriber = test_billing.fake, test_billing.catalogue, test_billing.subscriber


def _delete(client, password: str):
    page = client.get("/developer/account").text
    return client.post("/developer/account/delete", data={"password": password, "csrf_token": csrf_from(page)})


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
    app, client, subscriber, portal
):
    subscription = subscriber.subscribe(client, "pro")
    dev = subscriber.dev
    job = client.post("/api/v1/jobs", json={"workflow": "echo", "input": {}}, headers={"x-api-key": subscriber.key})
    assert job.status_code == 202, job.text
    assert subscriber.usage(client)["calls_used"] >= 1

    deleted = _delete(dev.client, PASSWORD)
    assert deleted.status_code == 302 and deleted.headers["location"] == "/signup"
    assert client.get("/api/usage", headers={"x-api-key": subscriber.key}).status_code == 401
    assert subscriber.fake.subscriptions[subscription["id"]]["status"] == "canceled"
    assert dev.client.get("/developer/api-keys").status_code == 302
    with app.app_context():
        assert _count(Account) == 0
        for model in (Job, ApiKey, KeyEvent, UsageDaily):
            assert _count(model, account_id=subscriber.id) == 0, model.__name__
        kept = db.session.scalars(sa.select(StripeEvent)).all()
        assert kept and all(event.account_id is None for event in kept)  # payment records, unlinked

    again = portal().sign_up(email=dev.email)
    assert again.new_key().status_code == 201
    with app.app_context():
        assert db.session.scalar(sa.select(Account.tier).where(Account.email == dev.email)) == "sandbox"
