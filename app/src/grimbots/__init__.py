"""GrimBots: multi-tenant Telegram sales-bot platform."""

__version__ = "1.0.0"
