"""`grimbots web`: Gunicorn embedded, configured from Settings.

No preload: each worker imports the app after fork, so SIGHUP (systemd reload) brings up
workers with new code and config while the old ones finish their requests.
"""

from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication

from grimbots.settings import Settings


def _child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def web_binds(value: str) -> list[str]:
    """GRIMBOTS_WEB_BIND's addresses (comma-separated): the deploy binds loopback, for the
    host's own health checks, and the host's private address, never every address."""
    return [b.strip() for b in value.split(",") if b.strip()]


class GrimbotsWeb(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": web_binds(s.web_bind),
            "workers": s.web_workers,
            "threads": s.web_threads,
            "worker_class": "gthread",
            "timeout": 30,
            "graceful_timeout": 25,
            "keepalive": 5,
            "backlog": 2048,
            "proc_name": "grimbots-web",
            # systemd manages the process; no control socket under a protected $HOME.
            "control_socket_disable": True,
            "child_exit": _child_exit,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": s.log_level.lower(),
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from grimbots.app import create_app

        return create_app(Settings.from_env())


def run(settings: Settings) -> None:
    GrimbotsWeb(settings).run()
