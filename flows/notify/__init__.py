"""Delivery of alert firings over the network: webhooks, Slack, email (SPEC §6), recorded in `deliveries`."""

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
