"""Mail a watch run's plain-text summary: through SMTP (smtplib) when the plan names an smtp_host, else
through a local sendmail binary (the plan's, or /usr/sbin/sendmail). A failure to send is returned as
a one-line reason for the caller to report: the run's results stand without the mail."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

SEND_TIMEOUT_S = 60
DEFAULT_SENDMAIL = "/usr/sbin/sendmail"


@dataclass(frozen=True)
class MailSettings:
    to: tuple[str, ...]
    sender: str | None = None
    sendmail: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25


def build_message(settings: MailSettings, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.sender or f"pmemlab@{socket.getfqdn()}"
    msg["To"] = ", ".join(settings.to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="pmemlab")
    msg.set_content(body)
    return msg


def send(settings: MailSettings, subject: str, body: str) -> str | None:
    """None when sent; else why not (one line)."""
    try:
        msg = build_message(settings, subject, body)
    except (ValueError, TypeError) as exc:  # e.g. an address with a line break: the run is not lost for it
        return f"the mail to {', '.join(settings.to)!r} could not be built: {exc}"
    if settings.smtp_host:
        where = f"SMTP {settings.smtp_host}:{settings.smtp_port}"
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT_S) as smtp:
                refused = smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            return f"{where}: {type(exc).__name__}: {exc}".replace("\n", " ")
        return f"{where} refused {', '.join(refused)}" if refused else None
    binary = settings.sendmail or DEFAULT_SENDMAIL
    if shutil.which(binary) is None:
        return (f"no sendmail at {binary}: set [report] sendmail or smtp_host in the plan "
                "(or install a mail transfer agent)")
    try:
        proc = subprocess.run([binary, "-t", "-oi"], input=msg.as_bytes(), capture_output=True,
                              timeout=SEND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary}: {exc}"
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().replace("\n", " ")[-300:]
        return f"{binary} exited with status {proc.returncode}: {err}"
    return None
