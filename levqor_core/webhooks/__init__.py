"""Signed webhooks to developers' endpoints (Standard Webhooks): endpoints and their secrets,
events, deliveries with retries, and the guard that keeps deliveries off private networks."""
