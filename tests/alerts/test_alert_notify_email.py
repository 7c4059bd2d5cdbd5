"""Email delivery against a real SMTP server on loopback (aiosmtpd)."""

import email
import email.policy
import logging
import socket

import polars as pl
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from alert_notify_support import CUSTOMERS, alert, clock, firings, no_sleep
from catalog.config import Settings, Smtp
from flows.notify import deliver

PASSWORD = "smtp-Pa55word-very-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self, refuse: int = 0):
        self.messages = []  # (mail_from, rcpt_tos, parsed message)
        self.refuse = refuse  # answer the first N messages with a temporary failure

    async def handle_DATA(self, server, session, envelope):
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"mailer" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server():
    started = []

    def start(**kw):
        inbox = Inbox(refuse=kw.pop("refuse", 0))
        port = free_port()
        ctl = Controller(inbox, hostname="127.0.0.1", port=port, **kw)
        ctl.start()
        started.append(ctl)
        return inbox, port

    yield start
    for ctl in started:
        ctl.stop()


def settings_for(port: int, **kw) -> Settings:
    return Settings(smtp=Smtp(host="127.0.0.1", port=port, sender="meterbill@example.com", **kw),
                    max_delivery_attempts=5)


def run(fired, a, settings, previous=None, **kw):
    return deliver(fired, {a.alert_id: a}, settings, CUSTOMERS, previous, clock(), sleep=no_sleep, **kw)


def test_email_is_a_multipart_message_with_plain_and_html_parts(smtp_server):
    inbox, port = smtp_server()
    a = alert([{"type": "email", "to": ["ops@example.com", "oncall@example.com"]}])
    out = run(firings("acme"), a, settings_for(port))
    assert out.select("channel", "target", "attempt", "status").sort("target").rows() == [
        ("email", "oncall@example.com", 1, "delivered"),
        ("email", "ops@example.com", 1, "delivered"),
    ]
    assert sorted(rcpts[0] for _, rcpts, _ in inbox.messages) == ["oncall@example.com", "ops@example.com"]
    mail_from, rcpts, msg = next(m for m in inbox.messages if m[1] == ["ops@example.com"])
    assert mail_from == "meterbill@example.com"
    assert msg["To"] == "ops@example.com" and msg["From"] == "meterbill@example.com"
    assert msg["Subject"] == "[meterbill] Compute over 1000 hours in a week: Acme <Rockets> & Co"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    assert "acme: compute_hours 1000.5 > 1000 in week of 2026-01-05" in plain
    assert "Current value: 1000.5" in plain and "Previous value: 900" in plain
    assert "<table" in html and "1000.5" in html
    assert "Acme &lt;Rockets&gt; &amp; Co" in html  # escaped, never raw markup
    assert msg["Message-ID"]


def test_second_run_does_not_resend_delivered_email(smtp_server):
    inbox, port = smtp_server()
    a = alert([{"type": "email", "to": ["ops@example.com"]}])
    first = run(firings("acme"), a, settings_for(port))
    second = run(firings("acme"), a, settings_for(port), previous=first)
    assert first.height == 1 and second.height == 0 and len(inbox.messages) == 1


def test_temporary_smtp_failure_is_retried(smtp_server):
    inbox, port = smtp_server(refuse=1)
    a = alert([{"type": "email", "to": ["ops@example.com"]}])
    out = run(firings("acme"), a, settings_for(port))
    assert out.select("attempt", "status").rows() == [(1, "failed"), (2, "delivered")]
    assert out["error"][0].startswith("SMTP 451")
    assert len(inbox.messages) == 1


def test_smtp_login_with_password_from_the_environment(smtp_server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    inbox, port = smtp_server(authenticator=authenticator, auth_require_tls=False)
    monkeypatch.setenv("SMTP_USER", "mailer")
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    a = alert([{"type": "email", "to": ["ops@example.com"]}])
    s = settings_for(port, username_env="SMTP_USER", password_env="SMTP_PASSWORD")
    out = run(firings("acme"), a, s)
    assert out["status"].to_list() == ["delivered"] and len(inbox.messages) == 1

    # a wrong password: failed attempts whose errors do not show it
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD + "-wrong")
    out = run(firings("globex"), a, s, retries_in_run=2)
    assert out["status"].to_list() == ["failed", "failed"]
    assert out["error"][0].startswith("SMTP 535")
    for secret in (PASSWORD, PASSWORD + "-wrong"):
        assert secret not in out.write_csv()
        assert secret not in caplog.text


def test_missing_password_env_and_missing_smtp_settings_are_failed_attempts(monkeypatch):
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    a = alert([{"type": "email", "to": ["ops@example.com"]}])
    out = run(firings("acme"), a, settings_for(free_port(), password_env="NO_SUCH_PASSWORD"))
    assert out.select("attempt", "status").rows() == [(1, "failed")]
    assert "NO_SUCH_PASSWORD is not set" in out["error"][0]
    out = run(firings("acme"), a, Settings())
    assert "settings.smtp is not configured" in out["error"][0]


def test_unreachable_smtp_server_is_a_failure():
    a = alert([{"type": "email", "to": ["ops@example.com"]}])
    out = run(firings("acme"), a, settings_for(free_port()), max_attempts=2)
    assert out.select("attempt", "status").rows() == [(1, "failed"), (2, "gave_up")]
    assert "cannot send through SMTP server 127.0.0.1" in out["error"][0]
    assert out.schema["attempt"] == pl.Int64
