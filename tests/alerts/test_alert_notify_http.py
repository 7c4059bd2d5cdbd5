"""Webhook and Slack delivery against a real HTTP server on loopback (pytest-httpserver)."""

import hashlib
import hmac
import json
import logging

import polars as pl
import pytest
from werkzeug import Response

from catalog.schemas import SCHEMAS
from flows.notify import SIGNATURE_HEADER, deliver, redact_url
from alert_notify_support import CUSTOMERS, SETTINGS, WINDOW_START, alert, clock, firings, no_sleep

SECRET = "s3cr3t-hmac-key-0123456789"


def run(fired, alerts, previous=None, **kw):
    kw.setdefault("sleep", no_sleep)
    return deliver(fired, {a.alert_id: a for a in alerts}, kw.pop("settings", SETTINGS), CUSTOMERS,
                   previous, kw.pop("now", clock()), **kw)


def test_webhook_posts_the_firing_record_as_json(httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    a = alert([{"type": "webhook", "url": httpserver.url_for("/hook")}])
    out = run(firings("globex"), [a])
    assert out.schema == pl.Schema(SCHEMAS["deliveries"])
    assert out.select("customer_id", "channel", "attempt", "status", "http_status", "error").rows() == [
        ("globex", "webhook", 1, "delivered", 200, None)]
    assert out["target"][0] == httpserver.url_for("/hook")
    (req, _), = httpserver.log
    assert req.headers["Content-Type"].startswith("application/json")
    assert SIGNATURE_HEADER not in req.headers
    body = json.loads(req.get_data())
    assert body["alert_id"] == "compute-heavy" and body["customer_id"] == "globex"
    assert body["customer_name"] == 'Globex "Corp"'
    assert body["current_value"] == "1000.5" and body["threshold"] == "1000" and body["previous_value"] == "900"
    assert body["window_start"] == "2026-01-05T00:00:00Z" and body["window_end"] == "2026-01-12T00:00:00Z"
    assert body["message"].startswith("globex: compute_hours 1000.5 > 1000")


def test_webhook_template_is_filled_and_signed(httpserver, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    template = '{"text": "{{customer_name}} used {{current_value}}", "value": {{current_value}}, "w": "{{window_start}}"}'
    a = alert([{"type": "webhook", "url": httpserver.url_for("/hook"), "secret_env": "HOOK_SECRET",
                "payload": template}])
    out = run(firings("globex"), [a])
    assert out["status"].to_list() == ["delivered"] and out["http_status"].to_list() == [204]
    (req, _), = httpserver.log
    raw = req.get_data()
    assert json.loads(raw) == {"text": 'Globex "Corp" used 1000.5', "value": 1000.5, "w": "2026-01-05T00:00:00Z"}
    expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert req.headers[SIGNATURE_HEADER] == expected


def test_missing_secret_env_is_a_failed_attempt_not_a_crash(httpserver, monkeypatch):
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    a = alert([{"type": "webhook", "url": httpserver.url_for("/hook"), "secret_env": "NO_SUCH_SECRET"}])
    out = run(firings("globex"), [a])
    assert out.select("attempt", "status").rows() == [(1, "failed")]  # tried once: retrying cannot help
    assert "NO_SUCH_SECRET is not set" in out["error"][0]
    assert httpserver.log == []  # nothing unsigned was sent


def test_slack_gets_text_and_blocks(httpserver):
    httpserver.expect_request("/services/T000/B000/XXXXSLACKTOKEN", method="POST").respond_with_data("ok")
    url = httpserver.url_for("/services/T000/B000/XXXXSLACKTOKEN")
    a = alert([{"type": "slack", "url": url}])
    out = run(firings("acme"), [a])
    assert out["status"].to_list() == ["delivered"]
    assert out["target"][0] == redact_url(url, secret_path=True)
    assert "XXXXSLACKTOKEN" not in out["target"][0] and out["target"][0].endswith("/services/T000/B000/***")
    (req, _), = httpserver.log
    body = json.loads(req.get_data())
    assert body["text"] == "acme: compute_hours 1000.5 > 1000 in week of 2026-01-05"
    assert isinstance(body["blocks"], list) and body["blocks"]
    texts = json.dumps(body["blocks"])
    assert "Acme &lt;Rockets&gt; &amp; Co" in texts  # Slack mrkdwn escaping
    assert {b["type"] for b in body["blocks"]} >= {"section"}


def test_fails_twice_then_succeeds_is_delivered_once_with_three_attempts(httpserver):
    calls = []

    def handler(request):
        calls.append(request.get_data())
        return Response("busy", status=503) if len(calls) <= 2 else Response("ok", status=200)

    httpserver.expect_request("/flaky", method="POST").respond_with_handler(handler)
    a = alert([{"type": "webhook", "url": httpserver.url_for("/flaky")}])
    waits = []
    out = run(firings("globex"), [a], sleep=waits.append, backoff=0.5)
    assert out.select("attempt", "status", "http_status").rows() == [
        (1, "failed", 503), (2, "failed", 503), (3, "delivered", 200)]
    assert out["error"][0] == "HTTP 503 SERVICE UNAVAILABLE: busy"
    assert waits == [0.5, 1.0]  # exponential backoff between attempts
    assert len(calls) == 3 and calls[0] == calls[2]  # the same body every time
    assert out["attempted_at"].is_sorted()

    # a second run with these rows as `previous` sends nothing
    again = run(firings("globex"), [a], previous=out)
    assert again.height == 0 and len(calls) == 3


def test_attempts_continue_across_runs_and_stop_at_max_attempts(httpserver):
    httpserver.expect_request("/down", method="POST").respond_with_data("no", status=500)
    a = alert([{"type": "webhook", "url": httpserver.url_for("/down")}])
    history = pl.DataFrame(schema=SCHEMAS["deliveries"])
    per_run = []
    for _ in range(4):
        new = run(firings("globex"), [a], previous=history, max_attempts=5, retries_in_run=2)
        per_run.append(new.select("attempt", "status").rows())
        history = pl.concat([history, new])
    assert per_run == [
        [(1, "failed"), (2, "failed")],
        [(3, "failed"), (4, "failed")],
        [(5, "gave_up")],
        [],
    ]
    assert len(httpserver.log) == 5


def test_max_attempts_defaults_to_settings(httpserver):
    from catalog.config import Settings

    httpserver.expect_request("/down", method="POST").respond_with_data("no", status=404)
    a = alert([{"type": "webhook", "url": httpserver.url_for("/down")}])
    out = run(firings("globex"), [a], settings=Settings(max_delivery_attempts=2))
    assert out.select("attempt", "status").rows() == [(1, "failed"), (2, "gave_up")]


def test_each_firing_and_channel_is_delivered_once_and_old_firings_are_not_resent(httpserver):
    httpserver.expect_request("/a", method="POST").respond_with_data("ok")
    httpserver.expect_request("/b", method="POST").respond_with_data("ok")
    a = alert([{"type": "webhook", "url": httpserver.url_for("/a")},
               {"type": "slack", "url": httpserver.url_for("/b")}])
    first = run(firings("globex"), [a])
    assert first.height == 2
    # the next run considers the old firing and a new one: only the new one is sent
    second = run(firings("globex", "acme"), [a], previous=first)
    assert second.select("customer_id", "channel").sort("channel").rows() == [("acme", "slack"), ("acme", "webhook")]
    assert len(httpserver.log) == 4


def test_connection_refused_is_a_failure_with_a_clear_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    a = alert([{"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}])
    out = run(firings("globex"), [a], retries_in_run=2)
    assert out["status"].to_list() == ["failed", "failed"]
    assert out["http_status"].to_list() == [None, None]
    assert "ConnectError" in out["error"][0]


def test_unknown_alert_is_skipped():
    out = run(firings("globex", alert_id="gone"), [])
    assert out.height == 0 and out.schema == pl.Schema(SCHEMAS["deliveries"])


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd"])
def test_only_http_urls(url):
    from catalog.config import Channel

    with pytest.raises(ValueError):  # refused by the catalogue already
        Channel(type="webhook", url=url)
    # and by delivery, should such a channel be built without validation
    a = alert([])
    a = a.model_copy(update={"channels": [Channel.model_construct(type="webhook", url=url, to=[],
                                                                  secret_env=None, payload=None)]})
    out = run(firings("globex"), [a])
    assert out["status"].to_list() == ["failed"]
    assert "only http and https" in out["error"][0]


def test_secrets_never_reach_the_table_or_the_logs(httpserver, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    httpserver.expect_request("/hook", method="POST").respond_with_data("denied", status=401)
    httpserver.expect_request("/services/T1/B1/SLACKSECRETTOKEN", method="POST").respond_with_data("ok")
    base = httpserver.url_for("/hook")
    userinfo_url = base.replace("http://", "http://hookuser:URLPASSWORD99@") + "?token=QUERYTOKEN42&v=1"
    a = alert([
        {"type": "webhook", "url": userinfo_url, "secret_env": "HOOK_SECRET"},
        {"type": "slack", "url": httpserver.url_for("/services/T1/B1/SLACKSECRETTOKEN")},
    ])
    out = run(firings("globex"), [a], retries_in_run=2)
    assert set(out["status"]) == {"failed", "delivered"}
    # the request really carried the query string and the signature
    hook_req = next(r for r, _ in httpserver.log if r.path == "/hook")
    assert hook_req.args["token"] == "QUERYTOKEN42"
    assert hook_req.headers[SIGNATURE_HEADER].startswith("sha256=")
    table = out.write_csv()
    # ours and the HTTP client's records (werkzeug's are the test server's own access log)
    ours = [r for r in caplog.records if not r.name.startswith("werkzeug")]
    assert any(r.name == "httpx" for r in ours) and any(r.name == "meterbill.notify" for r in ours)
    logs = "\n".join(r.getMessage() for r in ours)
    for secret in (SECRET, "URLPASSWORD99", "QUERYTOKEN42", "SLACKSECRETTOKEN", "hookuser"):
        assert secret not in table, secret
        assert secret not in logs, secret
    hook_target = out.filter(pl.col("channel") == "webhook")["target"][0]
    assert hook_target == base.replace("http://", "http://***@") + "?***"


def test_redact_url():
    assert redact_url("https://u:p@h.example.com:8443/a/b?x=1#f") == "https://***@h.example.com:8443/a/b?***"
    assert redact_url("https://hooks.slack.com/services/T0/B0/abc", secret_path=True) == \
        "https://hooks.slack.com/services/T0/B0/***"
    assert redact_url("https://example.com/hook") == "https://example.com/hook"


def test_firings_window_start_is_the_key(httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    a = alert([{"type": "webhook", "url": httpserver.url_for("/hook")}])
    out = run(firings("globex"), [a])
    assert out["window_start"].to_list() == [WINDOW_START]


def test_slack_with_a_payload_template_sends_the_rendered_template(httpserver):
    httpserver.expect_request("/slack", method="POST").respond_with_data("ok")
    a = alert([{"type": "slack", "url": httpserver.url_for("/slack"),
                "payload": '{"text": "{{alert_name}}: {{customer_id}} at {{current_value}}"}'}])
    out = run(firings("globex"), [a])
    assert out["status"].to_list() == ["delivered"]
    (req, _), = httpserver.log
    assert json.loads(req.get_data()) == {"text": "Compute over 1000 hours in a week: globex at 1000.5"}


def test_an_unknown_placeholder_at_delivery_is_a_failed_attempt(httpserver):
    from catalog.config import Channel

    bad = Channel(type="webhook", url=httpserver.url_for("/hook"), payload='{"x": "{{nope}}"}')
    a = alert([]).model_copy(update={"channels": [bad]})
    out = run(firings("globex"), [a])
    assert out.select("attempt", "status").rows() == [(1, "failed")]
    assert "unknown placeholder {{nope}}" in out["error"][0]
    assert httpserver.log == []
