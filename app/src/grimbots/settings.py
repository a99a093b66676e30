"""The one settings object, built from the environment (12-factor).

Every knob the app reads is declared here, with its environment variable and default, so the
Ansible role, the pyinfra deploy and the tests all configure the app the same way.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _hostports(raw: str, name: str) -> list[tuple[str, int]]:
    """Parse 'host:port,host:port' (used for Redis Cluster seeds and Sentinels)."""
    nodes = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise SettingsError(f"{name} entries must be host:port, got {item!r}")
        nodes.append((host, int(port)))
    return nodes


def _networks(raw: str, name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Parse 'cidr,cidr' (a bare address is a /32 or /128)."""
    out = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise SettingsError(f"{name} entries must be addresses or CIDRs, got {item!r}") from exc
    return out


def _gateway_secrets(raw: str) -> dict[str, str]:
    """Parse 'gateway:secret,gateway:secret'."""
    secrets: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, secret = item.partition(":")
        if not sep or not name or not secret:
            raise SettingsError("GRIMBOTS_GATEWAY_SECRETS entries must be gateway:secret")
        secrets[name] = secret
    return secrets


@dataclass(frozen=True)
class Settings:
    # Database: SQLite path URL (phase 1) or a libpq (multi-host) PostgreSQL URL (phase 2+).
    database_url: str = "sqlite:///grimbots.db"
    # Optional URL for read-only queries (stats), e.g. target_session_attrs=prefer-standby.
    database_read_url: str = ""
    database_pool_size: int = 10
    database_max_overflow: int = 5
    # App-state Redis (locks, dedup, rate limits, tracking tokens): one URL or a Redis Cluster.
    redis_mode: str = "single"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster_nodes: list[tuple[str, int]] = field(default_factory=list)
    redis_password: str = ""
    # Bound of each per-process connection pool.
    redis_max_connections: int = 50
    redis_socket_timeout: float = 2.0
    # RQ broker: the same single Redis, or a Sentinel-managed primary (RQ has no Cluster support).
    queue_redis_mode: str = "single"
    queue_redis_url: str = ""
    sentinels: list[tuple[str, int]] = field(default_factory=list)
    sentinel_master: str = "grimbots-queue"
    # Replicas of the queue Redis that must acknowledge an accepted update (WAIT) before the
    # webhook answers 200; 0 when the queue Redis has none (phase 1). Timeout in milliseconds.
    queue_min_replicas: int = 0
    queue_wait_timeout_ms: int = 500
    # Telegram Bot API base URL (the lab points it at the fake API on tg1).
    telegram_api_base: str = "https://api.telegram.org"
    telegram_timeout: float = 10.0
    telegram_max_retries: int = 4
    telegram_bot_rate: int = 30
    telegram_chat_rate: int = 1
    # Public base URL Telegram calls back (set-webhooks).
    public_url: str = "http://127.0.0.1:5000"
    # PEM file uploaded with setWebhook (`certificate`): a self-signed certificate, the fallback
    # for an operator without a domain (docs/https.md); "" for a publicly trusted one.
    webhook_certificate: str = ""
    # Payment gateway HMAC secrets by gateway name.
    gateway_secrets: dict[str, str] = field(default_factory=dict)
    # Tracking token lifetime (seconds).
    tracking_ttl: int = 86400
    log_level: str = "INFO"
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For is believed; none by default.
    trusted_proxies: list = field(default_factory=list)
    # Bearer token that shows /health's detail to a remote caller (loopback always sees it).
    health_token: str = ""
    # Gunicorn: one address or several, comma-separated (GRIMBOTS_WEB_BIND).
    web_bind: str = "0.0.0.0:5000"
    web_workers: int = 4
    web_threads: int = 4
    # RQ job timeout for one job (seconds).
    job_timeout: int = 300
    # Seconds a reconciler leaves half-done work to its own job's retries before acting.
    reconcile_grace: int = 120

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        redis_url = env.get("GRIMBOTS_REDIS_URL") or cls.redis_url
        settings = cls(
            database_url=env.get("GRIMBOTS_DATABASE_URL") or cls.database_url,
            database_read_url=env.get("GRIMBOTS_DATABASE_READ_URL", ""),
            database_pool_size=_int(env, "GRIMBOTS_DATABASE_POOL_SIZE", cls.database_pool_size),
            database_max_overflow=_int(
                env, "GRIMBOTS_DATABASE_MAX_OVERFLOW", cls.database_max_overflow
            ),
            redis_mode=_choice(env, "GRIMBOTS_REDIS_MODE", "single", ("single", "cluster")),
            redis_url=redis_url,
            redis_cluster_nodes=_hostports(
                env.get("GRIMBOTS_REDIS_CLUSTER_NODES", ""), "GRIMBOTS_REDIS_CLUSTER_NODES"
            ),
            redis_password=env.get("GRIMBOTS_REDIS_PASSWORD", ""),
            redis_max_connections=_int(
                env, "GRIMBOTS_REDIS_MAX_CONNECTIONS", cls.redis_max_connections
            ),
            redis_socket_timeout=_float(
                env, "GRIMBOTS_REDIS_SOCKET_TIMEOUT", cls.redis_socket_timeout
            ),
            queue_redis_mode=_choice(
                env, "GRIMBOTS_QUEUE_REDIS_MODE", "single", ("single", "sentinel")
            ),
            queue_redis_url=env.get("GRIMBOTS_QUEUE_REDIS_URL") or redis_url,
            sentinels=_hostports(env.get("GRIMBOTS_SENTINELS", ""), "GRIMBOTS_SENTINELS"),
            sentinel_master=env.get("GRIMBOTS_SENTINEL_MASTER") or cls.sentinel_master,
            queue_min_replicas=_int(env, "GRIMBOTS_QUEUE_MIN_REPLICAS", cls.queue_min_replicas),
            queue_wait_timeout_ms=_int(
                env, "GRIMBOTS_QUEUE_WAIT_TIMEOUT_MS", cls.queue_wait_timeout_ms
            ),
            telegram_api_base=(env.get("TELEGRAM_API_BASE") or cls.telegram_api_base).rstrip("/"),
            telegram_timeout=_float(env, "GRIMBOTS_TELEGRAM_TIMEOUT", cls.telegram_timeout),
            telegram_max_retries=_int(
                env, "GRIMBOTS_TELEGRAM_MAX_RETRIES", cls.telegram_max_retries
            ),
            telegram_bot_rate=_int(env, "GRIMBOTS_TELEGRAM_BOT_RATE", cls.telegram_bot_rate),
            telegram_chat_rate=_int(env, "GRIMBOTS_TELEGRAM_CHAT_RATE", cls.telegram_chat_rate),
            public_url=(env.get("GRIMBOTS_PUBLIC_URL") or cls.public_url).rstrip("/"),
            webhook_certificate=env.get("GRIMBOTS_WEBHOOK_CERTIFICATE", ""),
            gateway_secrets=_gateway_secrets(env.get("GRIMBOTS_GATEWAY_SECRETS", "")),
            tracking_ttl=_int(env, "GRIMBOTS_TRACKING_TTL", cls.tracking_ttl),
            log_level=(env.get("GRIMBOTS_LOG_LEVEL") or cls.log_level).upper(),
            trusted_proxies=_networks(
                env.get("GRIMBOTS_TRUSTED_PROXIES", ""), "GRIMBOTS_TRUSTED_PROXIES"
            ),
            health_token=env.get("GRIMBOTS_HEALTH_TOKEN", ""),
            web_bind=env.get("GRIMBOTS_WEB_BIND") or cls.web_bind,
            web_workers=_int(env, "GRIMBOTS_WEB_WORKERS", cls.web_workers),
            web_threads=_int(env, "GRIMBOTS_WEB_THREADS", cls.web_threads),
            job_timeout=_int(env, "GRIMBOTS_JOB_TIMEOUT", cls.job_timeout),
            reconcile_grace=_int(env, "GRIMBOTS_RECONCILE_GRACE", cls.reconcile_grace),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.redis_mode == "cluster" and not self.redis_cluster_nodes:
            raise SettingsError("GRIMBOTS_REDIS_MODE=cluster needs GRIMBOTS_REDIS_CLUSTER_NODES")
        if self.queue_redis_mode == "sentinel" and not self.sentinels:
            raise SettingsError("GRIMBOTS_QUEUE_REDIS_MODE=sentinel needs GRIMBOTS_SENTINELS")
        if self.redis_max_connections < 1:
            raise SettingsError("GRIMBOTS_REDIS_MAX_CONNECTIONS must be at least 1")
        if self.queue_min_replicas < 0:
            raise SettingsError("GRIMBOTS_QUEUE_MIN_REPLICAS must be 0 or more")
        if self.queue_min_replicas and not (
            1 <= self.queue_wait_timeout_ms < self.redis_socket_timeout * 1000
        ):
            raise SettingsError(
                "GRIMBOTS_QUEUE_WAIT_TIMEOUT_MS must be at least 1 and below the Redis socket "
                "timeout (GRIMBOTS_REDIS_SOCKET_TIMEOUT), or the wait itself times out"
            )
        if self.telegram_bot_rate < 1 or self.telegram_chat_rate < 1:
            raise SettingsError("Telegram rates must be at least 1 message per second")
        if not 0 < self.telegram_timeout <= 30:
            # The outbox's 60 s claim lease must cover a request started near its end.
            raise SettingsError("GRIMBOTS_TELEGRAM_TIMEOUT must be above 0 and at most 30 s")
        if self.reconcile_grace < 0:
            raise SettingsError("GRIMBOTS_RECONCILE_GRACE must not be negative")
