"""Limits on API-key calls: the gate and its Lua, the key-record cache, outage mode, refusals, tiers, headers."""
