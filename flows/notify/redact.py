"""Keep secrets out of errors, logs and tables: redacted URLs and scrubbed messages."""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+""")


def redact_url(url: str, secret_path: bool = False) -> str:
    """A URL safe to show: userinfo and query string masked, fragment dropped.

    With `secret_path` (Slack incoming webhooks, whose last path segment is the token) the last
    path segment is masked too: https://hooks.slack.com/services/T0/B0/*** .
    """
    try:
        u = urlsplit(url)
    except ValueError:
        return MASK
    hostport = u.netloc.rpartition("@")[2]
    netloc = (f"{MASK}@" if "@" in u.netloc else "") + hostport
    path = u.path
    if secret_path and path.strip("/"):
        head, _, last = path.rstrip("/").rpartition("/")
        path = f"{head}/{MASK}" if last else path
    query = MASK if u.query else ""
    return urlunsplit((u.scheme, netloc, path, query, ""))


def url_secrets(url: str, secret_path: bool = False) -> list[str]:
    """The parts of a URL that must not be shown (userinfo, query, secret path segment)."""
    out: list[str] = []
    try:
        u = urlsplit(url)
    except ValueError:
        return [url]
    userinfo = u.netloc.rpartition("@")[0]
    if userinfo:
        out += [userinfo, *userinfo.split(":", 1)]
    if u.query:
        out.append(u.query)
        for k, v in parse_qsl(u.query, keep_blank_values=True):
            out += [k + "=" + v, v]
    if secret_path and u.path.strip("/"):
        out.append(u.path.rstrip("/").rpartition("/")[2])
    # short fragments (`v=1`) are not secrets and would garble every message if masked
    return [s for s in out if len(s) >= 4]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every URL redacted and every known secret value masked."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text
