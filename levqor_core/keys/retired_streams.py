"""A retired key's open streams end at once: keys_retired (a key revoked, leaked, or past its
grace) becomes an entry on its account's control stream, which every stream of the account reads
beside its feed. A rolled key still in its grace period keeps streaming until that ends: its entry
says when, and its streams end then (levqor_core.streams.live)."""

import logging
from collections import defaultdict
from datetime import UTC, datetime

import redis
import sqlalchemy as sa
from blinker import ANY
from flask import current_app

from levqor_core import signals
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.streams import feed

log = logging.getLogger(__name__)


@signals.keys_retired.connect_via(ANY, weak=False)
def _end_their_streams(_sender, key_hashes: list[str], **_) -> None:
    try:
        now = datetime.now(UTC)
        keys = db.session.scalars(sa.select(ApiKey).where(ApiKey.key_hash.in_(key_hashes))).all()
        retired: dict[int, list[str]] = defaultdict(list)
        grace_ends: dict[int, dict[str, float]] = defaultdict(dict)
        for key in keys:
            if not key.is_usable(now):
                retired[key.account_id].append(key.id)
            elif key.expires_at is not None:  # rolled, in its grace period: its streams end with it
                grace_ends[key.account_id][key.id] = key.expires_at.timestamp()
        feed.retire_keys(current_app.extensions["levqor.limits_redis"], retired, grace_ends)
    except (redis.RedisError, redis.exceptions.RedisClusterException, sa.exc.SQLAlchemyError, RuntimeError) as err:
        # Their streams end at their next reconnect instead (the gate refuses the key).
        log.warning("could not end the streams of retired keys: %s", err)
