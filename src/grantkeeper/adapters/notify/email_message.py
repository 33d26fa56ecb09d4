"""Builds the MIME message for one notification email from the Jinja2 templates in ``templates/email``.

Kept apart from the SMTP transport so the words and headers can be checked without a server. The HTML part
is autoescaped (a provider name is tenant input); the text part is not, since it is never interpreted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache

import jinja2

from grantkeeper.core.model import NotificationType
from grantkeeper.ports import OutboxItem

# Types whose email carries a signed reconnect link: the user has something to do.
LINKED_TYPES = frozenset({NotificationType.WARNING, NotificationType.DISCONNECTED})


@dataclass(frozen=True)
class ReconnectLink:
    url: str
    expires_at: datetime


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("grantkeeper", "templates/email"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def message_id(idempotency_key: str, domain: str) -> str:
    """An RFC 5322 section 3.6.4 Message-ID that is the same for every resend of one notification.

    Derived from the outbox idempotency key, so a receiver (or a human) can recognise a duplicate after a
    crash between sending and recording the delivery. Hashed to keep it within the allowed characters.
    """
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    return f"<gk.{digest}@{domain}>"


def build_message(
    item: OutboxItem,
    *,
    email_from: str,
    sent_at: datetime,
    link: ReconnectLink | None,
) -> EmailMessage:
    """A multipart/alternative message (text and HTML) for ``item``, addressed to ``item.email``."""
    if item.email is None:
        raise ValueError("the item has no email address")
    if item.type is None:
        raise ValueError("the item is not a user notification")
    context = {
        "provider": item.provider,
        "reconnect_url": link.url if link else None,
        "link_expires_at": _human_time(link.expires_at) if link else None,
        "is_urgent": item.type is NotificationType.DISCONNECTED,
    }
    env = _environment()
    subject = env.get_template(f"{item.type.value}.subject.txt").render(context)
    message = EmailMessage()
    message["Subject"] = " ".join(subject.split())  # one line: no header injection through a provider name
    message["From"] = email_from
    message["To"] = item.email
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id(item.idempotency_key, _domain_of(email_from))
    message.set_content(env.get_template(f"{item.type.value}.txt").render(context))
    message.add_alternative(env.get_template(f"{item.type.value}.html").render(context), subtype="html")
    return message


@dataclass(frozen=True)
class DigestEntry:
    """One warning in a digest: which provider, when, and the link to reconnect that connection."""

    provider: str
    warned_at: datetime
    link: ReconnectLink | None


def digest_message_id(idempotency_keys: Sequence[str], domain: str) -> str:
    """The same Message-ID for every resend of one digest: derived from its rows' keys, in sorted order."""
    return message_id("+".join(sorted(idempotency_keys)), domain)


def build_digest_message(
    entries: Sequence[DigestEntry],
    *,
    to: str,
    email_from: str,
    sent_at: datetime,
    idempotency_keys: Sequence[str],
) -> EmailMessage:
    """One multipart/alternative message listing a day's warnings for one recipient, oldest first."""
    if not entries:
        raise ValueError("a digest needs at least one entry")
    context = {
        "entries": [
            {
                "provider": entry.provider,
                "when": _human_time(entry.warned_at),
                "reconnect_url": entry.link.url if entry.link else None,
                "link_expires_at": _human_time(entry.link.expires_at) if entry.link else None,
            }
            for entry in sorted(entries, key=lambda entry: entry.warned_at)
        ]
    }
    env = _environment()
    subject = env.get_template("digest.subject.txt").render(context)
    message = EmailMessage()
    message["Subject"] = " ".join(subject.split())
    message["From"] = email_from
    message["To"] = to
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = digest_message_id(idempotency_keys, _domain_of(email_from))
    message.set_content(env.get_template("digest.txt").render(context))
    message.add_alternative(env.get_template("digest.html").render(context), subtype="html")
    return message


def _domain_of(address: str) -> str:
    domain = address.rpartition("@")[2].strip().rstrip(">").strip()
    return domain or "grantkeeper.invalid"


def _human_time(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d %H:%M %Z").strip()
