"""The one door account email goes out by: Flask-Security-Too's mail, through the app's sender.

It is sent from a small pool, not the request thread. Otherwise the pages that mail only when an
address has an account (forgot password, resend confirmation) would tell anyone which addresses
do: a known one waited for SMTP, and an SMTP outage answered it with a 500 (README "Accounts").
A mail SMTP refuses is logged (recipient and subject, never the body with its link) and lost; the
page's "send it again" is the way back. At exit the pool sends what it holds before the process ends.
"""

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from threading import Lock

from flask import g
from flask_security import MailUtil

from levqor_core.outbound_mail import email_sender

log = logging.getLogger(__name__)

_outbox = ThreadPoolExecutor(max_workers=2, thread_name_prefix="account-mail")
_in_flight: set[Future] = set()
_in_flight_lock = Lock()


class PortalMail(MailUtil):
    """Every account email goes out through the app's one sender (SMTP, or the console without it)."""

    def send_mail(self, template, subject, recipient, sender, body, html, **kwargs) -> None:
        g.account_mail_queued = True
        send(str(recipient), str(subject), body, html)

    def normalize(self, email: str) -> str:
        # Stored addresses are all lower case (as before Flask-Security-Too), so lookups are too.
        return super().normalize(email).lower()

    def validate(self, email: str) -> str:
        return super().validate(email).lower()


def send(recipient: str, subject: str, body: str, html: str | None = None) -> None:
    """Hand a mail to an account's owner to the outbox (inside an app context); it goes out from
    the pool, so the caller neither waits for SMTP nor fails with it."""
    outgoing = email_sender()  # read from the app's config here, in the caller's context
    try:
        future = _outbox.submit(_send, outgoing, recipient, subject, body, html)
    except RuntimeError:  # the process is exiting and the pool takes no more: send it from here
        _send(outgoing, recipient, subject, body, html)
        return
    with _in_flight_lock:
        _in_flight.add(future)
    future.add_done_callback(_done)


def _send(outgoing, recipient: str, subject: str, body: str, html: str | None) -> None:
    try:
        outgoing.send(recipient, subject, body, html=html)
    except Exception as err:  # noqa: BLE001 (whatever the sender raises, the mail is lost, not the process)
        log.error("account mail to %s (%r) not sent: %s", recipient, subject, type(err).__name__)


def _done(future: Future) -> None:
    with _in_flight_lock:
        _in_flight.discard(future)


def wait_until_sent(timeout: float = 30) -> None:
    """Wait for the account mail handed over so far to be sent (or refused): for tests and tools."""
    with _in_flight_lock:
        pending = list(_in_flight)
    wait(pending, timeout=timeout)
