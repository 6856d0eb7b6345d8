"""Settings: validation, environment, trusted proxies."""

from __future__ import annotations

import pytest

from cowrite.config import ServerSettings, settings_from_env
from cowrite.errors import ConfigError


def test_client_address_ignores_headers_from_untrusted_peers() -> None:
    s = ServerSettings()
    assert s.client_address("10.0.0.5", "1.2.3.4", "5.6.7.8") == "10.0.0.5"


def test_client_address_from_trusted_proxy() -> None:
    s = ServerSettings(trusted_proxies=("127.0.0.1/32", "10.0.0.0/8"))
    assert s.client_address("127.0.0.1", "1.2.3.4", None) == "1.2.3.4"
    # right-most hop that is not a trusted proxy
    assert s.client_address("127.0.0.1", None, "6.6.6.6, 1.2.3.4, 10.1.1.1") == "1.2.3.4"
    assert s.client_address("127.0.0.1", None, None) == "127.0.0.1"
    assert s.client_address("192.168.1.1", "1.2.3.4", None) == "192.168.1.1"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        ServerSettings(trusted_proxies=("not-a-cidr",))
    with pytest.raises(ConfigError):
        ServerSettings(transports=("carrier-pigeon",))
    with pytest.raises(ConfigError):
        ServerSettings(ping_interval=0)


def test_environment_and_overrides() -> None:
    env = {"COWRITE_PING_INTERVAL": "5", "COWRITE_CORS_ORIGINS": "https://a, https://b"}
    s = settings_from_env(env, port=4000)
    assert s.ping_interval == 5.0
    assert s.cors_origins == ("https://a", "https://b")
    assert s.port == 4000
    assert s.path == "/socket.io/"
    with pytest.raises(ConfigError):
        settings_from_env({"COWRITE_PORT": "x"})


def test_sid_prefix_is_url_safe_and_ends_with_a_dot() -> None:
    assert ServerSettings(sid_prefix="i1.").sid_prefix == "i1."
    for bad in ("i1", "i.1.", ".", "a b.", "x" * 65 + "."):
        with pytest.raises(ConfigError, match="sid_prefix"):
            ServerSettings(sid_prefix=bad)
