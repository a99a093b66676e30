"""The `grimbots` command: run web and workers, migrate, set webhooks, seed demo data."""

from __future__ import annotations

import json
import sys

import click

from grimbots.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def main() -> None:
    """GrimBots platform command line."""


@main.command()
def web() -> None:
    """Run the HTTP app under Gunicorn (SIGHUP reloads workers gracefully)."""
    from grimbots.gunicorn_app import run

    run(_settings())


@main.command()
@click.argument("queues", nargs=-1, required=True)
@click.option("--burst", is_flag=True, help="Exit when the queues are empty (tests, draining).")
def worker(queues: tuple[str, ...], burst: bool) -> None:
    """Run one RQ worker (with scheduler) on QUEUES; SIGTERM finishes the current job first."""
    from grimbots.worker import run

    try:
        run(_settings(), list(queues), burst=burst)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--url", default=None, help="Database URL (default: GRIMBOTS_DATABASE_URL).")
def db_upgrade(url: str | None) -> None:
    """Apply Alembic migrations up to head (does nothing when already there)."""
    from grimbots.migrations_runner import upgrade

    changed = upgrade(url or _settings().database_url)
    click.echo("migrations applied" if changed else "database already at head")


@main.command("migrate-sqlite")
@click.option("--sqlite", "sqlite_path", required=True, type=click.Path(dir_okay=False))
@click.option("--postgres", "postgres_url", required=True)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100000))
@click.option("--backup-dir", default=None, help="Where the timestamped backup goes.")
def migrate_sqlite(sqlite_path: str, postgres_url: str, batch_size: int, backup_dir) -> None:
    """Copy every row from SQLite to PostgreSQL, validated; a second run changes nothing."""
    from grimbots.migrate_sqlite import MigrationError, migrate

    try:
        report = migrate(sqlite_path, postgres_url, batch_size=batch_size, backup_dir=backup_dir)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report.as_dict(), indent=2))


@main.command("set-webhooks")
@click.option("--bot-id", type=int, default=None, help="Only this bot (default: every active bot).")
@click.option(
    "--check",
    is_flag=True,
    help="Change nothing: list bots whose webhook is not at GRIMBOTS_PUBLIC_URL; exit 3 if any, "
    "1 if Telegram could not be asked about one.",
)
def set_webhooks(bot_id: int | None, check: bool) -> None:
    """Register each active bot's webhook URL and secret token with Telegram."""
    from grimbots.logs import configure_logging
    from grimbots.telegram import set_webhooks as run
    from grimbots.telegram import webhooks_due

    settings = _settings()
    configure_logging(settings.log_level)  # library log lines too go out without tokens
    if check:
        due = webhooks_due(settings, bot_id)
        click.echo(json.dumps(due, indent=2))
        # 1: Telegram could not be asked about some bot (a deploy stops); 3: some are due.
        sys.exit(1 if any("error" in d for d in due) else 3 if due else 0)
    results = run(settings, bot_id)
    click.echo(json.dumps(results, indent=2))
    if any(not r["ok"] for r in results):
        sys.exit(1)


@main.command("seed-demo")
def seed_demo() -> None:
    """Create (or find) a demo seller, funnel, bot and pool; print their ids and secrets."""
    from grimbots.db import get_db
    from grimbots.seed import seed_demo as run

    click.echo(json.dumps(run(get_db(_settings())), indent=2))


@main.command("sandbox-pay")
@click.argument("txid")
@click.option("--url", default=None, help="App base URL (default: GRIMBOTS_PUBLIC_URL).")
def sandbox_pay(txid: str, url: str | None) -> None:
    """Play the sandbox gateway: send the signed 'paid' webhook for a charge."""
    from grimbots.payments import sandbox_pay as run

    settings = _settings()
    try:
        status = run(settings, txid, url or settings.public_url)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"gateway webhook answered {status}")
    if status >= 300:
        sys.exit(1)


@main.command("move-redis")
@click.option(
    "--from",
    "source_url",
    required=True,
    help="The old single Redis (phase 2), e.g. redis://127.0.0.1:6379/0; its password, if the URL "
    "has none, is GRIMBOTS_REDIS_PASSWORD (read from the environment, never the command line).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Move nothing: exit 0 when no worker or job is live on the old Redis, 3 (with the "
    "reasons) while one is (a stopped worker's liveness mark lasts up to 10 s).",
)
def move_redis(source_url: str, check: bool) -> None:
    """Copy the app's keys from the old Redis to the configured ones (state to the cluster, queues
    to the queue Redis) with their time to live; refused while a worker or job is running; a
    second run does nothing."""
    import redis

    from grimbots.redis_move import SourceBusy, busy, move
    from grimbots.redis_pool import RedisPools

    settings = _settings()
    source = redis.Redis.from_url(
        source_url,
        password=settings.redis_password or None,
        socket_timeout=settings.redis_socket_timeout * 5,
    )
    if check:
        try:
            reasons = busy(source)
        except redis.RedisError as exc:
            raise click.ClickException(f"redis: {exc}") from exc
        finally:
            source.close()
        click.echo("busy: " + "; ".join(reasons) if reasons else "quiet")
        sys.exit(3 if reasons else 0)
    pools = RedisPools(settings)
    try:
        report = move(source, pools.state(), pools.queue())
    except SourceBusy as exc:
        raise click.ClickException(
            f"stop the app first, in-flight work must finish: {exc}"
        ) from exc
    except redis.RedisError as exc:
        raise click.ClickException(f"redis: {exc}") from exc
    finally:
        pools.close()
        source.close()
    click.echo(json.dumps(report.__dict__, indent=2, sort_keys=True))
    click.echo("unchanged: already moved" if report.already_done else "changed: moved")
