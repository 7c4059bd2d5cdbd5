"""Delivery of alert firings over the network: webhooks, Slack, email (SPEC §6), recorded in `deliveries`.

Decisions where SPEC §6 is silent:

* One delivery target per webhook/Slack URL and per email recipient (one message each), so a
  retry never re-sends to a recipient who already got the message. `target` is the URL with
  userinfo and query masked (and, for Slack, the token path segment), or the email address.
* Webhook default body: the firing record as JSON, decimals as exact strings, instants as
  ISO-8601 UTC; headers X-Meterbill-Signature (when secret_env is set) and X-Meterbill-Firing, a
  stable id of the firing so receivers can deduplicate at-least-once deliveries. Emails carry a
  Message-ID derived from the same id.
* Slack with a `payload` template posts the rendered template as the whole body (it is then the
  author's job to include text/blocks); without one, meterbill's text + blocks message. Email
  ignores `payload`.
* Any non-2xx response (redirects are not followed) is a failed attempt and retried. Configuration
  errors (missing environment variable, bad template, no smtp settings, non-http URL) are tried
  once per run, since retrying in the same run cannot help, and again on later runs.
* The attempt that reaches max_attempts is recorded as `gave_up` if it fails. A firing whose alert
  has left the catalogue is skipped with a warning.
* Email: STARTTLS if configured, implicit TLS when the port is 465, login when password_env is
  set; http_status is null for email (the SMTP code is in `error`).
* httpx logs every request URL at INFO: during deliver() a filter masks URL secrets in those logs.
"""

from flows.notify.channels import SIGNATURE_HEADER, email_message, signature, slack_body
from flows.notify.deliver import channel_targets, deliver
from flows.notify.redact import redact_url, scrub

__all__ = [
    "SIGNATURE_HEADER",
    "channel_targets",
    "deliver",
    "email_message",
    "redact_url",
    "scrub",
    "signature",
    "slack_body",
]
