"""The one table of tiers: quotas, burst limits and prices read by every part of the app."""

from dataclasses import dataclass

SANDBOX_DAILY_LIMIT = 100
KEY_CREATIONS_PER_DAY = 1


@dataclass(frozen=True)
class Tier:
    name: str  # stored value and API value
    label: str
    monthly_quota: int | None  # None means unlimited
    burst_per_second: int
    price_usd: int
    support: str
    stripe_lookup_key: str
    # Jobs queued or running at once per account (production and sandbox each): a free account's
    # long jobs can hold at most this many workers.
    max_jobs_in_flight: int
    # Webhook endpoints per account (live and sandbox each).
    max_webhook_endpoints: int
    # Server-Sent Event streams open at once per account (`levqor listen` and `levqor logs tail`
    # side by side, and one more while a dropped stream reconnects).
    max_streams: int

    @property
    def quota_label(self) -> str:
        return "Unlimited" if self.monthly_quota is None else f"{self.monthly_quota:,}/mo"


TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("sandbox", "Sandbox", 1_000, 10, 0, "Community", "levqor_developer_sandbox_monthly", 2, 2, 3),
        Tier("pro", "Pro", 10_000, 50, 19, "Email", "levqor_developer_pro_monthly", 10, 5, 10),
        Tier("enterprise", "Enterprise", None, 250, 199, "SLA", "levqor_developer_enterprise_monthly", 25, 20, 50),
    )
}
DEFAULT_TIER = "sandbox"


def get(name: str) -> Tier:
    """Look up a tier by name, case-insensitively; KeyError when unknown."""
    return TIERS[name.strip().lower()]


def by_lookup_key(lookup_key: str) -> Tier | None:
    return next((t for t in TIERS.values() if t.stripe_lookup_key == lookup_key), None)
