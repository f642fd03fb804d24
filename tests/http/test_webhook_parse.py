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


@pytest.mark.parametrize(
    "body",
    [
        b'{"action": "labeled", "sender": {"login": "a", "tags": [1, 2,]}}',  # deep inside a skipped field
        b'{"action": "labeled", "issue": {"title": "caf\xe9"}}',  # not UTF-8
        b'{"action": "labeled", "issue": {"title": "\\ud800"}}',  # a lone surrogate
        b'{"action": "labeled"} trailing',
        b'{"action": "labeled", "n": NaN}',
    ],
)
def test_parse_delivery_rejects_invalid_json_anywhere_in_the_body(body):
    with pytest.raises(WebhookRejected) as caught:
        parse_delivery(HEADERS, body)
    assert caught.value.status == 400 and "not valid JSON" in caught.value.message


def test_parse_delivery_takes_unusual_types_leniently_and_non_ascii_text():
    odd = b'{"action": 5, "repository": {"full_name": ["x"]}, "installation": {"id": "7"}}'
    assert parse_delivery(HEADERS, odd) == ParsedDelivery("d-1", "issues", "", "", None)
    assert parse_delivery(HEADERS, b'{"repository": null, "installation": null}') == ParsedDelivery(
        "d-1", "issues", "", "", None
    )
    # valid JSON however large the number (json.loads reads it as infinity)
    assert parse_delivery(HEADERS, b'{"action": "edited", "n": 1e999}').action == "edited"
    text = '{"action": "edited", "repository": {"full_name": "acme/wïdgets"}, "comment": {"body": "✓ 👍"}}'
    assert parse_delivery(HEADERS, text.encode()) == ParsedDelivery("d-1", "issues", "edited", "acme/wïdgets", None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"installation": {"id": 9223372036854775808}}',
        b'{"installation": {"id": -9223372036854775809}}',
        b'{"installation": {"id": 18446744073709551616}}',
        b'{"installation": {"id": 1e999}}',
        b'{"installation": {"id": 7.0}}',
        b'{"action": ["odd"], "installation": {"id": 1e999}}',
        b'{"action": ["odd"], "installation": {"id": 9223372036854775808}}',
    ],
)
def test_parse_delivery_refuses_an_installation_id_the_ledger_cannot_hold(body):
    with pytest.raises(WebhookRejected) as caught:
        parse_delivery(HEADERS, body)
    assert caught.value.status == 400 and "installation.id" in caught.value.message


def test_parse_delivery_keeps_the_extreme_installation_ids_it_can_hold():
    for value in (2**63 - 1, -(2**63)):
        body = b'{"installation": {"id": %d}}' % value
        assert parse_delivery(HEADERS, body).installation_id == value
        odd = b'{"action": 1, "installation": {"id": %d}}' % value  # the lenient path
        assert parse_delivery(HEADERS, odd).installation_id == value


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"action": 1, "n": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}", "nested too deeply"),
        (b'{"action": 1, "n": [1, 2,]}', "not valid JSON"),
        (b'{"action": 1, "n": "caf\xe9"}', "not valid JSON"),
    ],
)
def test_parse_delivery_refuses_deep_or_invalid_bodies_on_either_path(body, fragment):
    with pytest.raises(WebhookRejected) as caught:
        parse_delivery(HEADERS, body)
    assert caught.value.status == 400 and fragment in caught.value.message
