"""Where the app's email goes: SMTP when SMTP_HOST is set, the log otherwise (`make run` prints the
links there), or EMAIL_SENDER's class. Account mail and quota alerts alike leave through here."""

import importlib
import logging
import smtplib
from email.message import EmailMessage
from typing import Protocol

from flask import current_app

log = logging.getLogger(__name__)


class EmailSender(Protocol):
    def send(self, to: str, subject: str, body: str, html: str | None = None) -> None: ...


class LogSender:
    """Development: the email is written to the log instead of being sent."""

    def __init__(self, config: dict):
        self.sent: list[EmailMessage] = []
        self.body_in_log = config.get("MAIL_BODY_IN_LOG", True)

    def send(self, to: str, subject: str, body: str, html: str | None = None) -> None:
        if not self.body_in_log:
            # On a dyno the log is shipped elsewhere: its working reset and confirmation links stay out.
            log.warning("email to %s not sent (SMTP_HOST is unset): %s", to, subject)
            return
        # Printed as a block that stands out in `make run`'s console: with no SMTP server this is
        # the only way to read a confirmation or reset link.
        rule = "=" * 72
        log.warning(
            "email (not sent; SMTP_HOST is unset)\n%s\nTo: %s\nSubject: %s\n\n%s\n%s", rule, to, subject, body, rule
        )


class SmtpSender:
    """Sends through SMTP_HOST:SMTP_PORT, with STARTTLS and a login when configured."""

    def __init__(self, config: dict):
        self.host, self.port = config["SMTP_HOST"], int(config["SMTP_PORT"])
        self.username, self.password = config.get("SMTP_USERNAME"), config.get("SMTP_PASSWORD")
        self.starttls, self.sender = config.get("SMTP_STARTTLS", True), config["MAIL_FROM"]

    def send(self, to: str, subject: str, body: str, html: str | None = None) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(body)
        if html:
            message.add_alternative(html, subtype="html")
        with smtplib.SMTP(self.host, self.port, timeout=15) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


def email_sender(config: dict | None = None) -> EmailSender:
    """EMAIL_SENDER ("module:Class") when set; SMTP when SMTP_HOST is set; otherwise the log."""
    config = config if config is not None else current_app.config
    if config.get("EMAIL_SENDER"):
        module, _, name = config["EMAIL_SENDER"].partition(":")
        return getattr(importlib.import_module(module), name)(config)
    return SmtpSender(config) if config.get("SMTP_HOST") else LogSender(config)
