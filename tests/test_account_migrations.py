"""Account migrations run on rows written before them: each is upgraded from its previous revision
on an app of its own (a SQLite file), with rows inserted as that revision's schema had them."""

from datetime import UTC, datetime

import flask_migrate as migrate
import sqlalchemy as sa

from levqor_core.accounts import service as accounts
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.keys.format import is_well_formed

from .helpers import app_on_sqlite


def test_migration_0006_counts_existing_accounts_as_confirmed_so_they_can_still_create_keys(tmp_path, redis_server):
    """Accounts signed up before 0006, when there was no confirmation, must not be locked out of keys."""
    old = app_on_sqlite(tmp_path / "before-0006.db", redis_server)
    signed_up = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    with old.app_context():
        migrate.upgrade(revision="0005")
        # The accounts table as 0005 left it: no confirmed_at, fs_uniquifier or active yet.
        for email in ("early@example.com", "earlier@example.com"):
            db.session.execute(
                sa.text(
                    "INSERT INTO accounts (email, password_hash, tier, created_at)"
                    " VALUES (:email, 'x', 'sandbox', :created_at)"
                ),
                {"email": email, "created_at": signed_up},
            )
        db.session.commit()

        migrate.upgrade()

        account = accounts.by_email("early@example.com")
        assert account.confirmed_at == account.created_at == signed_up
        # Each session identifier is its own (the session cookie names it).
        other = accounts.by_email("earlier@example.com")
        assert account.fs_uniquifier and other.fs_uniquifier and account.fs_uniquifier != other.fs_uniquifier
        accounts.require_confirmed(account)  # what every door that creates a key checks first
        issued = keys.issue(account, keys.Actor(email=account.email))
        assert is_well_formed(issued.raw) and keys.active_key(account.id).id == issued.record.id
        db.session.remove()
