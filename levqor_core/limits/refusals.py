"""The problems the gate refuses an API-key call with, the same whether Redis answers or not."""

from levqor_core import problems
from levqor_core.limits.headers import ietf_remaining, policy

# Failed authentications (well-formed keys that are unknown or revoked) allowed per client
# address per minute; past that, unknown keys from it get 429 without a database lookup.
FAILED_AUTH_PER_MINUTE = 20


def malformed_key() -> problems.Problem:
    return problems.InvalidApiKey("The x-api-key header is not a well-formed Levqor key (lvq_…).")


def unknown_key() -> problems.Problem:
    return problems.InvalidApiKey("This API key is unknown or has been revoked.")


def grace_over() -> problems.Problem:
    return problems.InvalidApiKey("This API key's rotation grace period is over; use the new key.")


def over_burst(burst: int, headers: dict) -> problems.Problem:
    return problems.BurstLimitExceeded(f"More than {burst} calls per second on this key.").with_headers(headers)


def over_quota(area: str, limit: int, headers: dict) -> problems.Problem:
    """The sandbox's daily cap or the period's quota, whichever `area` counts against."""
    if area == "sandbox":
        return problems.SandboxDailyCapExceeded(f"The sandbox allows {limit} calls per key per UTC day.").with_headers(
            headers
        )
    return problems.MonthlyQuotaExceeded(
        f"This account has used its {limit:,} calls for the period; upgrade or wait for the reset."
    ).with_headers(headers)


def retry_after(reset: float, now: float) -> str:
    """Whole seconds until `reset`, at least 1."""
    return str(max(1, int(reset - now + 0.999)))


def failed_auth_reset(now: float) -> int:
    """When the failed-authentication window holding `now` ends (windows are calendar minutes)."""
    return (int(now) // 60 + 1) * 60


def throttled(now: float) -> problems.Problem:
    """Too many failed authentications from the caller's address this minute."""
    reset = failed_auth_reset(now)
    seconds_left = int(retry_after(reset, now))
    return problems.AuthenticationThrottled(
        f"More than {FAILED_AUTH_PER_MINUTE} failed authentications from your address this minute; "
        "check the key you send."
    ).with_headers(
        {
            "X-RateLimit-Limit": str(FAILED_AUTH_PER_MINUTE),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
            "RateLimit-Policy": policy("failed-auth", FAILED_AUTH_PER_MINUTE, 60),
            "RateLimit": ietf_remaining("failed-auth", 0, seconds_left),
            "Retry-After": str(seconds_left),
        }
    )
