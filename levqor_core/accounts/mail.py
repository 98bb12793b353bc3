"""The one door account email goes out by: Flask-Security-Too's mail, through the app's sender."""

from flask_security import MailUtil


class PortalMail(MailUtil):
    """Every account email goes out through the app's one sender (SMTP, or the console without it)."""

    def send_mail(self, template, subject, recipient, sender, body, html, **kwargs) -> None:
        from levqor_core.ops.alerts import email_sender  # the ops package loads later than extensions

        email_sender().send(str(recipient), str(subject), body, html=html)

    def normalize(self, email: str) -> str:
        # Stored addresses are all lower case (as before Flask-Security-Too), so lookups are too.
        return super().normalize(email).lower()

    def validate(self, email: str) -> str:
        return super().validate(email).lower()
