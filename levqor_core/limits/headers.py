"""Rate-limit response headers: X-RateLimit-* and the IETF draft's RateLimit-Policy / RateLimit pair.

The gate (API-key calls) and Flask-Limiter (portal and session calls) both answer with these."""

BURST = "burst"  # rate_limit_headers: report the per-second window


def policy(name: str, quota: int, window_seconds: int) -> str:
    """One entry of the IETF draft's RateLimit-Policy list."""
    return f'"{name}";q={quota};w={window_seconds}'


def ietf_remaining(name: str, remaining: int, seconds_left: int) -> str:
    """The IETF draft's RateLimit value for the policy that matters."""
    return f'"{name}";r={remaining};t={seconds_left}'


def rate_limit_headers(area, limit, remaining, reset, burst, burst_left, now) -> dict:
    """X-RateLimit-* for the limit that matters most here, plus the IETF RateLimit pair.

    area BURST (or "meta", or an unlimited quota) reports the per-second burst window."""
    policies = [policy("burst", burst, 1)]
    if area in ("meta", BURST) or limit < 0:
        # Nothing else limits these calls: report the per-second window, which resets next second.
        name, limit, remaining, reset, seconds_left = "burst", burst, burst_left, int(now) + 1, 1
    else:
        name = "daily" if area == "sandbox" else "monthly"
        window = 86400 if area == "sandbox" else 2592000
        policies.insert(0, policy(name, limit, window))
        seconds_left = max(0, int(reset - now))
    remaining = max(remaining, 0)
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(reset)),
        "RateLimit-Policy": ", ".join(policies),
        "RateLimit": ietf_remaining(name, remaining, seconds_left),
    }
