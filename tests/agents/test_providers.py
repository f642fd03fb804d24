"""Where each preset's model provider is, and what a `command` agent may receive."""

from __future__ import annotations

import pytest

from bot.agents.egress import REFUSED_NO_NETWORK, EgressPolicy, egress_decision
from bot.agents.presets import command_env
from bot.agents.providers import Endpoint, parse_endpoint, provider_endpoints


def test_each_preset_names_its_endpoint_variable_with_the_public_default() -> None:
    assert provider_endpoints("claude", {}) == [Endpoint("ANTHROPIC_BASE_URL", "api.anthropic.com", 443)]
    assert provider_endpoints("codex", {"OPENAI_BASE_URL": "http://127.0.0.1:8123/v1"}) == [
        Endpoint("OPENAI_BASE_URL", "127.0.0.1", 8123)
    ]
    aider = provider_endpoints("aider", {"OPENAI_API_BASE": "http://localhost:9000/v1"})
    assert [e.address for e in aider] == ["localhost:9000", "api.anthropic.com:443"]
    assert aider[0].loopback and not aider[1].loopback


def test_a_command_agent_has_the_endpoints_its_env_names() -> None:
    env = {"MY_MODEL_BASE_URL": "https://models.internal:8443", "MY_MODEL_KEY": "k"}
    assert provider_endpoints("command", env, command_env=["MY_MODEL_BASE_URL", "MY_MODEL_KEY"]) == [
        Endpoint("MY_MODEL_BASE_URL", "models.internal", 8443)
    ]
    assert provider_endpoints("command", env) == []


@pytest.mark.parametrize("url", ["", "ftp://x", "not a url", "http://", "http://h:99999"])
def test_what_is_not_an_http_endpoint_is_none(url: str) -> None:
    assert parse_endpoint("X", url) is None


def test_with_network_false_only_the_provider_passes() -> None:
    policy = EgressPolicy(network=False, provider_hosts=("api.anthropic.com:443", "127.0.0.1:8123"))
    assert egress_decision("api.anthropic.com", 443, ["160.79.104.10"], policy).allowed
    assert egress_decision("127.0.0.1", 8123, ["127.0.0.1"], policy).allowed  # a local model server too
    assert egress_decision("api.anthropic.com", 80, ["160.79.104.10"], policy).reason == REFUSED_NO_NETWORK
    assert egress_decision("github.com", 443, ["140.82.112.3"], policy).reason == REFUSED_NO_NETWORK


def test_command_env_passes_provider_variables_and_what_the_operator_allows() -> None:
    assert command_env(["ANTHROPIC_API_KEY", "OPENAI_BASE_URL"]) == ("ANTHROPIC_API_KEY", "OPENAI_BASE_URL")
    assert command_env(["MY_TOKEN"], "MY_TOKEN, OTHER") == ("MY_TOKEN",)
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        command_env(["AWS_SECRET_ACCESS_KEY"])
