"""parse_delivery: the fields the ledger needs, and nothing of the parsed payload kept."""

from __future__ import annotations

import gc

import pytest

from bot.webhook import ParsedDelivery, WebhookRejected, parse_delivery

HEADERS = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": " d-1 "}


def test_parse_delivery_reads_the_ledger_fields_only():
    body = b'{"action": "labeled", "repository": {"full_name": "acme/widgets"}, "installation": {"id": 7}}'
    assert parse_delivery(HEADERS, body) == ParsedDelivery("d-1", "issues", "labeled", "acme/widgets", 7)
    assert parse_delivery(HEADERS, b'{"installation": {"id": true}}') == ParsedDelivery("d-1", "issues", "", "", None)


def test_parse_delivery_keeps_no_parsed_payload_alive():
    body = b'{"action": "opened", "marker_key_4711": {"nested": [1, 2, 3]}}'
    parsed = parse_delivery(HEADERS, body)
    assert parsed.action == "opened"
    assert not any(isinstance(o, dict) and "marker_key_4711" in o for o in gc.get_objects())


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b'"text"'])
def test_parse_delivery_rejects_what_is_not_a_json_object(body):
    with pytest.raises(WebhookRejected) as caught:
        parse_delivery(HEADERS, body)
    assert caught.value.status == 400
