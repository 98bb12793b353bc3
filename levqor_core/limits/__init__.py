"""Limits on API-key calls: the gate (one Redis round trip per call), the tier table and the rate-limit headers."""
