"""Application settings: precedence flags > env > file > defaults; production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowrite.config import effective_settings, load_app_settings
from cowrite.errors import ConfigError

SECRET = "c" * 40


def test_production_refuses_without_key_or_cors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWT"):
        load_app_settings(environ={"COWRITE_CORS_ORIGINS": "https://a"}, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="CORS"):
        load_app_settings(environ={"COWRITE_AUTH_SECRET": SECRET}, data_dir=str(tmp_path))
    dev = load_app_settings(environ={}, data_dir=str(tmp_path), dev_mode=True)
    assert dev.dev_mode and dev.auth.secret


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "cowrite.toml"
    cfg.write_text(
        'port = 4001\nping_interval = 7\ncors_origins = ["https://f"]\n'
        f'[auth]\nsecret = "{SECRET}"\n'
    )
    s = load_app_settings(environ={}, config_file=str(cfg), data_dir=str(tmp_path))
    assert (s.server.port, s.server.ping_interval, s.server.cors_origins) == (
        4001,
        7.0,
        ("https://f",),
    )
    s = load_app_settings(
        environ={"COWRITE_PORT": "4002"}, config_file=str(cfg), data_dir=str(tmp_path)
    )
    assert s.server.port == 4002
    s = load_app_settings(
        environ={"COWRITE_PORT": "4002"},
        config_file=str(cfg),
        data_dir=str(tmp_path),
        server_overrides={"port": 4003},
    )
    assert s.server.port == 4003


def test_effective_settings_mask_secrets(tmp_path: Path) -> None:
    s = load_app_settings(
        environ={"COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "https://a"},
        data_dir=str(tmp_path),
        store="postgresql://user:pw@db:5432/x",
    )
    shown = effective_settings(s)
    assert shown["auth"]["secret"] == "***"
    assert "pw" not in shown["store"] and shown["store"].endswith("db:5432/x")


def test_bad_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = [")
    with pytest.raises(ConfigError):
        load_app_settings(environ={}, config_file=str(cfg), data_dir=str(tmp_path))


def test_instance_id_prefixes_session_ids(tmp_path: Path) -> None:
    """Behind nginx, a session's requests are routed by the instance id that
    starts its Engine.IO sid (deploy/nginx.conf); a generated id adds none."""
    env = {"COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "https://a"}
    s = load_app_settings(environ=env, data_dir=str(tmp_path), instance_id="i2")
    assert (s.instance_id, s.server.sid_prefix) == ("i2", "i2.")
    s = load_app_settings(environ={**env, "COWRITE_INSTANCE_ID": "eu-1_a"}, data_dir=str(tmp_path))
    assert s.server.sid_prefix == "eu-1_a."
    s = load_app_settings(environ=env, data_dir=str(tmp_path))
    assert s.instance_id and s.server.sid_prefix == ""
    for bad in ("i.1", "a b", "x" * 65, "é"):
        with pytest.raises(ConfigError, match="instance id"):
            load_app_settings(environ=env, data_dir=str(tmp_path), instance_id=bad)


def test_server_api_key_rules(tmp_path: Path) -> None:
    base = {"COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "https://a"}
    d = str(tmp_path)
    assert load_app_settings(environ=base, data_dir=d).api_key is None  # off without a key
    key = "k" * 20
    on = load_app_settings(environ={**base, "COWRITE_API_KEY": key}, data_dir=d)
    assert on.api_key == key
    assert effective_settings(on)["api_key"] == "***"
    # --no-api / COWRITE_API=0 win over a key; asking for it without one fails in production.
    assert (
        load_app_settings(environ={**base, "COWRITE_API_KEY": key}, data_dir=d, api=False).api_key
        is None
    )
    assert (
        load_app_settings(
            environ={**base, "COWRITE_API_KEY": key, "COWRITE_API": "0"}, data_dir=d
        ).api_key
        is None
    )
    with pytest.raises(ConfigError, match="API is enabled but has no key"):
        load_app_settings(environ={**base, "COWRITE_API": "1"}, data_dir=d)
    with pytest.raises(ConfigError, match="API is enabled but has no key"):
        load_app_settings(environ=base, data_dir=d, api=True)
    with pytest.raises(ConfigError, match="at least 16"):
        load_app_settings(environ={**base, "COWRITE_API_KEY": "short"}, data_dir=d)
    # Development: a key is generated once and kept in the data directory.
    dev = load_app_settings(environ={}, data_dir=d, dev_mode=True, api=True)
    assert dev.api_key and len(dev.api_key) >= 16
    assert (tmp_path / "dev-api-key").read_text().strip() == dev.api_key
    assert load_app_settings(environ={}, data_dir=d, dev_mode=True, api=True).api_key == dev.api_key
    assert load_app_settings(environ={}, data_dir=d, dev_mode=True).api_key == dev.api_key
    assert load_app_settings(environ={}, data_dir=d, dev_mode=True, api=False).api_key is None
    # The settings file: below the environment.
    cfg = tmp_path / "cowrite.toml"
    cfg.write_text(f'api_key = "{"f" * 16}"\napi_timeout = 0.5\n')
    from_file = load_app_settings(environ=base, data_dir=d, config_file=str(cfg))
    assert (from_file.api_key, from_file.api_timeout) == ("f" * 16, 0.5)
    env_wins = {**base, "COWRITE_API_KEY": key}
    assert load_app_settings(environ=env_wins, data_dir=d, config_file=str(cfg)).api_key == key


def test_recovery_settings_precedence(tmp_path: Path) -> None:
    base = {"COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "https://a"}
    s = load_app_settings(environ=base, data_dir=str(tmp_path))
    assert (s.recovery, s.collab.recovery_window) == (False, 120.0)
    cfg = tmp_path / "cowrite.toml"
    cfg.write_text("recovery = true\nrecovery_window = 30\n")
    s = load_app_settings(environ=base, config_file=str(cfg), data_dir=str(tmp_path))
    assert (s.recovery, s.collab.recovery_window) == (True, 30.0)
    env = {**base, "COWRITE_RECOVERY": "0", "COWRITE_RECOVERY_WINDOW": "45"}
    s = load_app_settings(environ=env, config_file=str(cfg), data_dir=str(tmp_path))
    assert (s.recovery, s.collab.recovery_window) == (False, 45.0)
    s = load_app_settings(
        environ=env,
        config_file=str(cfg),
        data_dir=str(tmp_path),
        recovery=True,
        recovery_window=10.0,
    )
    assert (s.recovery, s.collab.recovery_window) == (True, 10.0)
    assert effective_settings(s)["recovery"] is True
    with pytest.raises(ConfigError, match="COWRITE_RECOVERY_WINDOW"):
        load_app_settings(environ={**base, "COWRITE_RECOVERY_WINDOW": "0"}, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="recovery window"):
        load_app_settings(environ=base, data_dir=str(tmp_path), recovery_window=-1.0)


def test_presence_handover_settings(tmp_path: Path) -> None:
    from cowrite.app import build_app

    base = {"COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "https://a"}
    s = load_app_settings(environ=base, data_dir=str(tmp_path))
    assert s.presence_handover == 2.0
    assert effective_settings(s)["presence_handover"] == 2.0
    # Only a shared (Redis) presence has another instance to hand users over to.
    assert build_app(s).presence_handover == 0.0
    shared = {**base, "COWRITE_REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert (
        build_app(load_app_settings(environ=shared, data_dir=str(tmp_path))).presence_handover
        == 2.0
    )
    cfg = tmp_path / "cowrite.toml"
    cfg.write_text("presence_handover = 0.5\n")
    s = load_app_settings(environ=base, config_file=str(cfg), data_dir=str(tmp_path))
    assert s.presence_handover == 0.5
    s = load_app_settings(
        environ={**base, "COWRITE_PRESENCE_HANDOVER": "0"}, data_dir=str(tmp_path)
    )
    assert s.presence_handover == 0.0
    # A short ttl lowers the default instead of refusing to start.
    short = load_app_settings(environ={**base, "COWRITE_PRESENCE_TTL": "3"}, data_dir=str(tmp_path))
    assert short.presence_handover == 1.0
    # Bounded (a third of the presence ttl, 10 s by default): a drain must end.
    with pytest.raises(ConfigError, match="COWRITE_PRESENCE_HANDOVER"):
        load_app_settings(
            environ={**base, "COWRITE_PRESENCE_HANDOVER": "11"}, data_dir=str(tmp_path)
        )


def test_commit_pacing_defaults_by_store_and_is_overridden(tmp_path: Path) -> None:
    base = {"COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "https://a"}
    sqlite = load_app_settings(environ=base, data_dir=str(tmp_path))
    assert sqlite.collab.commit_interval == 0.002
    pg = load_app_settings(
        environ=base, store="postgresql://127.0.0.1/test", data_dir=str(tmp_path)
    )
    assert pg.collab.commit_interval == 0.004
    assert pg.collab.commit_enough == 8
    chosen = load_app_settings(
        environ={**base, "COWRITE_COMMIT_INTERVAL": "0.001"},
        store="postgresql://127.0.0.1/test",
        data_dir=str(tmp_path),
    )
    assert chosen.collab.commit_interval == 0.001
    cfg = tmp_path / "cowrite.toml"
    cfg.write_text("commit_interval = 0\n")
    off = load_app_settings(
        environ=base,
        config_file=str(cfg),
        store="postgresql://127.0.0.1/test",
        data_dir=str(tmp_path),
    )
    assert off.collab.commit_interval == 0.0
