"""What one domain announces and another acts on, so neither imports the other (blinker, as Flask's
own signals): keys and accounts say what changed; the gate's key cache (levqor_core.limits) drops
what it cached. Receivers connect when their module is imported, which the app factory does."""

from blinker import Namespace

_signals = Namespace()

# sender: None; key_hashes: list[str]. A key was revoked, rolled or expired: its cached record goes.
keys_retired = _signals.signal("keys-retired")
# sender: the account id. Its tier or billing period changed: its keys' cached records go.
account_limits_changed = _signals.signal("account-limits-changed")
# sender: the account id. A key of the account was issued, rolled or revoked (its key ring changed).
account_keys_changed = _signals.signal("account-keys-changed")
