"""Settings: validation, environment, trusted proxies."""

from __future__ import annotations

from pathlib import Path

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


def test_retention_and_snapshot_size_come_from_flags_env_file(tmp_path: Path) -> None:
    from cowrite.config import load_app_settings, load_retention
    from cowrite.core.compaction import RetentionSettings

    toml = tmp_path / "cowrite.toml"
    toml.write_text(
        "compact_keep_ops = 50\ncompact_keep_days = 2.5\ncompact_interval = 60\n"
        "max_snapshot_bytes = 4096\n"
    )
    env = {"COWRITE_CONFIG": str(toml), "COWRITE_COMPACT_KEEP_DAYS": "1"}
    assert load_retention(environ=env) == RetentionSettings(keep_ops=50, keep_days=1, interval=60)
    assert load_retention(environ=env, overrides={"keep_ops": 7, "interval": None}) == (
        RetentionSettings(keep_ops=7, keep_days=1, interval=60)
    )
    settings = load_app_settings(
        environ={**env, "COWRITE_AUTH_SECRET": "s" * 40, "COWRITE_CORS_ORIGINS": "https://a"},
        retention_overrides={"interval": 0.0},
        data_dir=str(tmp_path),
    )
    assert settings.collab.retention == RetentionSettings(keep_ops=50, keep_days=1, interval=0)
    assert settings.collab.max_snapshot_bytes == 4096
    assert load_retention(environ={}) == RetentionSettings()
    for bad in ({"COWRITE_COMPACT_KEEP_OPS": "1.5"}, {"COWRITE_COMPACT_INTERVAL": "-1"}):
        with pytest.raises(ConfigError):
            load_retention(environ=bad)


def test_per_ip_exemption_is_remembered_per_settings() -> None:
    exempt = ServerSettings(per_ip_exempt=("10.0.0.0/8",))
    default = ServerSettings()
    for _ in range(2):  # the second answers come from each one's memory
        assert exempt.ip_limited("10.1.2.3") is False
        assert exempt.ip_limited("192.0.2.1") is True
        assert exempt.ip_limited("not an address") is True
        assert default.ip_limited("192.0.2.1") is True
    assert exempt == ServerSettings(per_ip_exempt=("10.0.0.0/8",))  # the memory is no field
