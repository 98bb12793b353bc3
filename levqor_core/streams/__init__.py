"""Live streams to a key's owner (Server-Sent Events): the account's webhook events for a listening
session (`levqor listen`) and its request log as calls are recorded (`levqor logs tail`)."""
