"""/secret-scanning/github: GitHub's reports of keys found in public (its signature is checked by
handlers.security.github_signature_auth before the body is even validated)."""

from levqor_core.keys import leaks

from ._reply import Reply, ok


def github_secret_scanning_report(*, body: list) -> Reply:
    """Revoke the live keys GitHub found in public; GitHub's feedback, one label per token."""
    return ok(leaks.report(body))
