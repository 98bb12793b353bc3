"""API keys: the key format and its hash, the create / roll / revoke lifecycle and its audit trail."""
