"""Settings: one frozen object, built once, never mutated.

Names and defaults follow ADR-003 where it gives them (``pingInterval`` 25 s;
``pingTimeout`` 20 s as Socket.IO's default, the ADR's example uses 30 s;
transports websocket and polling; CORS allow-list with credentials).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Final

from cowrite.errors import ConfigError

TRANSPORTS = ("polling", "websocket")
#: An instance id usable in Engine.IO session ids (URL-safe, no ".").
INSTANCE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SID_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]{1,64}\.")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    # Network
    host: str = "127.0.0.1"
    port: int = 3000
    path: str = "/socket.io/"
    # Engine.IO (seconds, bytes)
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    transports: tuple[str, ...] = TRANSPORTS
    # Socket.IO
    connect_timeout: float = 45.0
    max_attachments: int = 10
    # Security: allowed Origins for browsers ("*" allows any).  A request that
    # carries an Origin not listed is refused (cross-site WebSocket hijacking).
    cors_origins: tuple[str, ...] = ()
    # Back-pressure: a connection whose unsent bytes exceed this is
    # disconnected as a slow consumer instead of delaying anyone else.
    send_buffer_limit: int = 1 << 20
    # Proxies (CIDRs) whose X-Real-IP / X-Forwarded-For are believed; from any
    # other peer those headers are ignored and the TCP peer address is used.
    trusted_proxies: tuple[str, ...] = ()
    # Admission limits (0 disables one).  max_connections 0 = derived from the
    # process's open-file limit (see server/limits.py).  Per-IP limits do not
    # apply to the addresses in per_ip_exempt (loopback by default: local
    # tooling; behind a proxy set trusted_proxies so clients' real addresses count).
    max_connections: int = 0
    max_handshakes: int = 2000
    per_ip_connections: int = 500
    per_ip_rate: float = 50.0
    per_ip_burst: int = 100
    per_ip_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Scale-out: Engine.IO session ids start with this ("<instance-id>." when
    # the instance id is given), so that a proxy can route every request of a
    # session to the instance that holds it (deploy/nginx.conf's map $arg_sid).
    sid_prefix: str = ""
    # Runtime
    use_uvloop: bool = True
    gc_freeze: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    _proxy_nets: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)
    _exempt_nets: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)
    _limited: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ping_interval <= 0 or self.ping_timeout <= 0:
            raise ConfigError("ping_interval and ping_timeout must be positive")
        if self.max_payload < 1024:
            raise ConfigError("max_payload must be at least 1024 bytes")
        if not self.transports or any(t not in TRANSPORTS for t in self.transports):
            raise ConfigError(f"transports must be one or both of: {', '.join(TRANSPORTS)}")
        if not self.path.startswith("/"):
            raise ConfigError("path must start with '/'")
        if not self.path.endswith("/"):
            object.__setattr__(self, "path", self.path + "/")
        if self.send_buffer_limit < 1024:
            raise ConfigError("send_buffer_limit must be at least 1024 bytes")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port out of range")
        try:
            nets = tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from exc
        object.__setattr__(self, "_proxy_nets", nets)
        try:
            exempt = tuple(ipaddress.ip_network(p, strict=False) for p in self.per_ip_exempt)
        except ValueError as exc:
            raise ConfigError(f"per_ip_exempt: {exc}") from exc
        object.__setattr__(self, "_exempt_nets", exempt)
        if min(self.max_connections, self.max_handshakes, self.per_ip_connections) < 0:
            raise ConfigError("connection limits cannot be negative")
        if self.per_ip_rate < 0 or self.per_ip_burst < 0:
            raise ConfigError("per_ip_rate and per_ip_burst cannot be negative")
        if self.sid_prefix and not _SID_PREFIX.fullmatch(self.sid_prefix):
            raise ConfigError("sid_prefix: 1-64 of A-Z a-z 0-9 _ - followed by one '.'")

    def client_address(self, peer: str, real_ip: str | None, forwarded_for: str | None) -> str:
        """The client's address: the TCP peer, unless the peer is a trusted proxy,
        in which case the right-most untrusted X-Forwarded-For hop, else X-Real-IP."""
        if not self.trusted_proxies or not self._trusted(peer):
            return peer
        if forwarded_for:
            for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
                if not self._trusted(hop):
                    return hop
        if real_ip:
            return real_ip.strip()
        return peer

    def ip_limited(self, address: str) -> bool:
        """Whether per-IP limits apply to ``address`` (remembered per address:
        parsing one costs more than the rest of admission, and clients come
        back from the same ones)."""
        cache = self._limited
        known = cache.get(address)
        if known is None:
            if len(cache) >= 4096:
                cache.clear()
            known = cache[address] = _ip_limited(address, self._exempt_nets)
        return known

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._proxy_nets)

    def origin_allowed(self, origin: str | None) -> bool:
        """No Origin header (a non-browser client) is allowed; a browser's must be listed."""
        if origin is None:
            return True
        return "*" in self.cors_origins or origin in self.cors_origins

    def replace(self, **changes: Any) -> ServerSettings:
        return dataclasses.replace(self, **changes)


def _ip_limited(address: str, exempt: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return not any(ip in net for net in exempt)


_KINDS: Final = {"int": "a whole number", "float": "a number"}


def _coerce(value: str, target: Any) -> Any:
    if isinstance(target, bool):
        return value.lower() in {"1", "true", "yes", "on"}
    if isinstance(target, int):
        return int(value)
    if isinstance(target, float):
        return float(value)
    if isinstance(target, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def settings_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> ServerSettings:
    """Defaults, then ``COWRITE_<NAME>`` environment variables, then ``overrides``
    (the command-line flags that were given)."""
    env = os.environ if environ is None else environ
    base = ServerSettings()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ServerSettings):
        if f.name in ("extra", "_proxy_nets", "_exempt_nets", "_limited"):
            continue
        raw = env.get(f"COWRITE_{f.name.upper()}")
        if raw is not None:
            try:
                values[f.name] = _coerce(raw, getattr(base, f.name))
            except ValueError:
                kind = type(getattr(base, f.name)).__name__
                raise ConfigError(
                    f"COWRITE_{f.name.upper()}: expected {_KINDS.get(kind, kind)}, got {raw!r}"
                ) from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServerSettings(**values)


# -- the whole application ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AppSettings:
    """Everything ``cowrite serve`` needs, grouped by concern.

    ``store`` is ``sqlite:///PATH`` (or a bare path; the embedded default lives
    in ``data_dir``) or a ``postgresql://`` DSN.  ``dev_mode`` enables the
    development conveniences (a generated JWT secret kept in ``data_dir``).
    """

    server: ServerSettings
    auth: Any  # cowrite.auth.AuthSettings (imported lazily: config stays import-light)
    collab: Any  # cowrite.core.settings.CollabSettings
    store: str
    data_dir: str
    dev_mode: bool
    # Scale-out: with a Redis URL the broker and presence go through Redis
    # (several instances); without, they stay in this process.
    redis_url: str | None = None
    redis_prefix: str = "cowrite:"
    instance_id: str = ""
    presence_ttl: float = 30.0
    # How long a drain keeps its users in the shared presence, for them to
    # rejoin elsewhere without leaving the roster (cowrite.app.App.stop).
    presence_handover: float = 2.0
    # Socket.IO connection-state recovery (off by default; the window is
    # collab.recovery_window).  Records live in Redis with redis_url, else in
    # this process.
    recovery: bool = False
    # The server API (POST /api/<method>): on when this holds its key.
    api_key: str | None = None
    api_timeout: float = 1.0  # how long ``info`` waits for the other instances


#: Shortest API key accepted in production.
MIN_API_KEY = 16


def _env_float(
    env: dict[str, str] | Any, name: str, default: float, *, minimum: float, maximum: float
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: not a number: {raw!r}") from exc
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}")
    return value


def _env_bool(env: dict[str, str] | Any, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return str(raw).lower() in {"1", "true", "yes", "on"}


def load_app_settings(
    *,
    environ: dict[str, str] | None = None,
    server_overrides: dict[str, Any] | None = None,
    store: str | None = None,
    data_dir: str | None = None,
    dev_mode: bool | None = None,
    auto_create: bool | None = None,
    redis_url: str | None = None,
    instance_id: str | None = None,
    api: bool | None = None,
    config_file: str | None = None,
    retention_overrides: dict[str, Any] | None = None,
    recovery: bool | None = None,
    recovery_window: float | None = None,
) -> AppSettings:
    """Defaults < TOML file < ``COWRITE_*`` environment < explicit arguments (the CLI flags)."""
    from cowrite.core.settings import CollabSettings

    env = _merged_env(environ, config_file)
    dev = dev_mode if dev_mode is not None else _env_bool(env, "COWRITE_DEV", False)
    store_url, directory = _store_location(env, store, data_dir)
    server = settings_from_env(dict(env), **(server_overrides or {}))
    auth = _auth_settings(env, dev, directory)
    try:
        max_op = int(env.get("COWRITE_MAX_OPERATION_BYTES", 64 * 1024))
    except ValueError:
        raise ConfigError("COWRITE_MAX_OPERATION_BYTES: expected a whole number of bytes") from None
    if not dev and not server.cors_origins:
        raise ConfigError(
            "production mode needs a CORS allow-list: set COWRITE_CORS_ORIGINS "
            "(or --cors-origin), or run with --dev"
        )
    collab = CollabSettings(
        auto_create=auto_create
        if auto_create is not None
        else _env_bool(env, "COWRITE_AUTO_CREATE", True),
        docs_claim=auth.docs_claim,
        max_operation_bytes=max_op,
        commit_interval=_env_float(
            env,
            "COWRITE_COMMIT_INTERVAL",
            default_commit_interval(store_url),
            minimum=0.0,
            maximum=1.0,
        ),
        commit_enough=int(_env_float(env, "COWRITE_COMMIT_ENOUGH", 8, minimum=1, maximum=10_000)),
        max_snapshot_bytes=int(
            _env_float(env, "COWRITE_MAX_SNAPSHOT_BYTES", 900 * 1024, minimum=1024, maximum=1 << 30)
        ),
        retention=_retention(env, retention_overrides or {}),
        recovery_window=recovery_window
        if recovery_window is not None
        else _env_float(env, "COWRITE_RECOVERY_WINDOW", 120.0, minimum=1.0, maximum=86_400.0),
    )
    if not 1.0 <= collab.recovery_window <= 86_400.0:
        raise ConfigError("recovery window must be between 1 and 86400 seconds")
    try:
        presence_ttl = float(env.get("COWRITE_PRESENCE_TTL", 30.0))
    except ValueError:
        raise ConfigError("COWRITE_PRESENCE_TTL: expected a number of seconds") from None
    if presence_ttl <= 0:
        raise ConfigError("COWRITE_PRESENCE_TTL must be positive")
    explicit_id = instance_id or env.get("COWRITE_INSTANCE_ID")
    if explicit_id:
        if not INSTANCE_ID.fullmatch(explicit_id):
            raise ConfigError(
                f"instance id {explicit_id!r}: 1-64 of A-Z a-z 0-9 _ - (it starts every "
                "Engine.IO session id, which nginx routes on: deploy/nginx.conf)"
            )
        server = dataclasses.replace(server, sid_prefix=f"{explicit_id}.")
    import socket
    import uuid

    return AppSettings(
        api_key=_api_key(env, api, dev, directory),
        api_timeout=_env_float(env, "COWRITE_API_TIMEOUT", 1.0, minimum=0.01, maximum=30.0),
        server=server,
        auth=auth,
        collab=dataclasses.replace(collab, presence_reap_interval=presence_ttl / 3),
        store=store_url,
        data_dir=directory,
        dev_mode=dev,
        redis_url=redis_url or env.get("COWRITE_REDIS_URL") or None,
        redis_prefix=env.get("COWRITE_REDIS_PREFIX", "cowrite:"),
        instance_id=instance_id
        or env.get("COWRITE_INSTANCE_ID")
        or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
        presence_ttl=presence_ttl,
        # 2 s by default, at most a third of the ttl (a drain must end; a short
        # ttl lowers the default rather than refuse to start).
        presence_handover=_env_float(
            env,
            "COWRITE_PRESENCE_HANDOVER",
            min(2.0, presence_ttl / 3),
            minimum=0.0,
            maximum=presence_ttl / 3,
        ),
        recovery=recovery if recovery is not None else _env_bool(env, "COWRITE_RECOVERY", False),
    )


def _api_key(env: dict[str, str], api: bool | None, dev: bool, directory: str) -> str | None:
    """The server API's key, or ``None`` when the API is off.

    The API is on when asked for (``--api``, ``COWRITE_API=1``) or, unless
    turned off (``--no-api``, ``COWRITE_API=0``), when a key is set
    (``COWRITE_API_KEY``) or in development mode.  In production it needs a
    key of at least ``MIN_API_KEY`` characters, as the JWT key rule wants a
    secret; in development a missing one is generated and kept in the data
    directory (``dev-api-key``), like the JWT secret."""
    key = env.get("COWRITE_API_KEY") or None
    enabled = api if api is not None else _env_bool(env, "COWRITE_API", key is not None or dev)
    if not enabled:
        return None
    if key is None:
        if not dev:
            raise ConfigError(
                "the server API is enabled but has no key: set COWRITE_API_KEY "
                f"(at least {MIN_API_KEY} characters), or turn it off (--no-api, COWRITE_API=0)"
            )
        return dev_secret(directory, "dev-api-key")
    if len(key) < MIN_API_KEY and not dev:
        raise ConfigError(f"COWRITE_API_KEY must be at least {MIN_API_KEY} characters")
    return key


def _retention(env: dict[str, str], overrides: dict[str, Any]) -> Any:
    """``RetentionSettings``: defaults < file < ``COWRITE_COMPACT_*`` < flags."""
    from cowrite.core.compaction import RetentionSettings

    base = RetentionSettings()
    keep_ops = _env_float(env, "COWRITE_COMPACT_KEEP_OPS", base.keep_ops, minimum=0, maximum=2**53)
    if keep_ops != int(keep_ops):
        raise ConfigError("COWRITE_COMPACT_KEEP_OPS: expected a whole number of operations")
    values: dict[str, Any] = {
        "keep_ops": int(keep_ops),
        "keep_days": _env_float(
            env, "COWRITE_COMPACT_KEEP_DAYS", base.keep_days, minimum=0, maximum=100_000
        ),
        "interval": _env_float(
            env, "COWRITE_COMPACT_INTERVAL", base.interval, minimum=0, maximum=365 * 86_400
        ),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RetentionSettings(**values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def load_retention(
    *,
    environ: dict[str, str] | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Only the retention settings (``cowrite compact``): no key, no CORS list."""
    return _retention(_merged_env(environ, config_file), overrides or {})


def _auth_settings(env: dict[str, str], dev: bool, directory: str) -> Any:
    from cowrite.auth import AuthSettings, auth_settings_from_env

    auth = auth_settings_from_env(dict(env))
    if auth is None:
        if not dev:
            raise ConfigError(
                "no JWT key configured: set COWRITE_AUTH_SECRET (HS256) or "
                "COWRITE_AUTH_ALGORITHMS with COWRITE_AUTH_PUBLIC_KEY_FILE / "
                "COWRITE_AUTH_JWKS_FILE, or run with --dev"
            )
        # Development: a generated secret.  A token's docs claim (``cowrite
        # token --doc DOC=ROLE``) is honoured; the demo's tokens carry none, so
        # the stored roles apply to them.
        auth = AuthSettings(secret=dev_secret(directory), docs_claim=True)
    return auth


def load_auth_settings(
    *,
    environ: dict[str, str] | None = None,
    data_dir: str | None = None,
    dev_mode: bool | None = None,
    config_file: str | None = None,
) -> Any:
    """Only the token settings (``cowrite token``): no CORS list needed."""
    env = _merged_env(environ, config_file)
    dev = dev_mode if dev_mode is not None else _env_bool(env, "COWRITE_DEV", False)
    return _auth_settings(env, dev, _store_location(env, None, data_dir)[1])


def _merged_env(environ: dict[str, str] | None, config_file: str | None) -> dict[str, str]:
    """The real environment over the settings file's values (as ``COWRITE_*``)."""
    base_env = os.environ if environ is None else environ
    path = config_file or base_env.get("COWRITE_CONFIG")
    return {**(file_settings(path) if path else {}), **base_env}


def default_commit_interval(store_url: str) -> float:
    """Group-commit pacing when none is configured: 4 ms on PostgreSQL, 2 ms
    on SQLite.  A PostgreSQL transaction costs ~180-270 µs of database CPU and
    ~90 µs of asyncpg's whatever its size, and never blocks the event loop:
    at 2,000 edits/s 4 ms cut server + database CPU per delivered message by
    27 % for +1 ms at P95 (docs/PERFORMANCE.md, eighth session).  SQLite
    commits inline, where a longer wait made P95 worse at high rates."""
    return 0.004 if is_postgres_url(store_url) else 0.002


def is_postgres_url(store_url: str) -> bool:
    """Whether the store URL names PostgreSQL (else it is an SQLite path)."""
    return store_url.startswith(("postgres://", "postgresql://"))


def _store_location(
    env: dict[str, str], store: str | None, data_dir: str | None
) -> tuple[str, str]:
    directory = data_dir or env.get("COWRITE_DATA_DIR") or "data"
    return store or env.get("COWRITE_STORE") or f"sqlite:///{directory}/cowrite.db", directory


def load_store_url(
    *,
    environ: dict[str, str] | None = None,
    store: str | None = None,
    data_dir: str | None = None,
    config_file: str | None = None,
) -> str:
    """Where the store is, for the commands that need only it (``grant``,
    ``revoke``, ``migrate``): no signing key, no CORS list needed."""
    return _store_location(_merged_env(environ, config_file), store, data_dir)[0]


#: Top-level keys of a settings file besides ``ServerSettings``' fields, and
#: the keys of its ``[auth]`` table (``COWRITE_AUTH_*``).
_APP_KEYS: Final = frozenset(
    {
        "store",
        "data_dir",
        "dev",
        "auto_create",
        "max_operation_bytes",
        "redis_url",
        "redis_prefix",
        "instance_id",
        "presence_ttl",
        "presence_handover",
        "commit_interval",
        "commit_enough",
        "api",
        "api_key",
        "api_timeout",
        "max_snapshot_bytes",
        "compact_keep_ops",
        "compact_keep_days",
        "compact_interval",
        "recovery",
        "recovery_window",
    }
)
_AUTH_KEYS: Final = frozenset(
    {
        "algorithms",
        "secret",
        "public_key_file",
        "jwks_file",
        "audience",
        "issuer",
        "leeway",
        "docs_claim",
    }
)


def _server_keys() -> frozenset[str]:
    return frozenset(
        f.name
        for f in dataclasses.fields(ServerSettings)
        if f.name != "extra" and not f.name.startswith("_")
    )


def _unknown_key(path: str, key: str, known: frozenset[str], table: str = "") -> ConfigError:
    import difflib

    where = f"[{table}] " if table else ""
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f": did you mean {near[0]!r}?" if near else f" (known: {', '.join(sorted(known))})"
    return ConfigError(f"{path}: unknown setting {where}{key!r}{hint}")


def check_file_keys(path: str, data: dict[str, Any]) -> None:
    """ConfigError naming the nearest valid key for any key cowrite does not know
    (a misspelled setting would otherwise be ignored without a word)."""
    top = _server_keys() | _APP_KEYS | {"auth"}
    for key, value in data.items():
        if key not in top:
            raise _unknown_key(path, key, top)
        if key == "auth":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: auth must be a table ([auth])")
            for sub in value:
                if sub not in _AUTH_KEYS:
                    raise _unknown_key(path, sub, _AUTH_KEYS, "auth")
        elif isinstance(value, dict):
            raise ConfigError(f"{path}: {key} must be a value, not a table")


def file_settings(path: str) -> dict[str, str]:
    """A TOML settings file as ``COWRITE_*`` variables (lower precedence than the
    real environment).  Top-level keys are the settings' names (``port``,
    ``ping_interval``, ``cors_origins = [...]``, ``store``, ``redis_url``...);
    a ``[auth]`` table holds the ``COWRITE_AUTH_*`` ones (``secret``, ...)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    check_file_keys(path, data)
    out: dict[str, str] = {}

    def put(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            name = f"{prefix}{key.upper()}"
            if isinstance(value, dict):
                put(name + "_", value)
            elif isinstance(value, list | tuple):
                out[name] = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            else:
                out[name] = str(value)

    put("COWRITE_", data)
    return out


def effective_settings(settings: AppSettings) -> dict[str, Any]:
    """Every effective setting, secrets masked (for ``cowrite check-config``)."""

    def table(obj: Any) -> dict[str, Any]:
        values = {}
        for f in dataclasses.fields(obj):
            if f.name.startswith("_") or f.name == "extra":
                continue
            value = getattr(obj, f.name)
            if f.name in {"secret"} and value:
                value = "***"
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = table(value)
            values[f.name] = list(value) if isinstance(value, tuple) else value
        return values

    store = settings.store
    if "@" in store:  # a DSN with credentials
        scheme, _, rest = store.partition("://")
        store = f"{scheme}://***@{rest.split('@', 1)[1]}"
    return {
        "mode": "development" if settings.dev_mode else "production",
        "store": store,
        "data_dir": settings.data_dir,
        "redis_url": settings.redis_url,
        "instance_id": settings.instance_id,
        "presence_ttl": settings.presence_ttl,
        "presence_handover": settings.presence_handover,
        "api": "on" if settings.api_key else "off",
        "api_key": "***" if settings.api_key else None,
        "api_timeout": settings.api_timeout,
        "recovery": settings.recovery,
        "server": table(settings.server),
        "auth": table(settings.auth),
        "collab": table(settings.collab),
    }


def dev_secret(data_dir: str, name: str = "dev-jwt-secret") -> str:
    """A development-mode secret (the HS256 one, the API key): generated once,
    kept in ``data_dir``."""
    import secrets
    from pathlib import Path

    path = Path(data_dir) / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret
