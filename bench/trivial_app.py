"""The baseline for the webhook benchmark: the least a Flask app can do with the same request.

Served by the same Gunicorn (gthread, same workers, threads, keep-alive and backlog as
`grimbots web`) and hit with the same wrk script, so the ratio webhook / trivial measures what the
app's own work costs (bot lookup, secret check, JSON parse, dedup locks, enqueue), not Gunicorn
or Flask.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/webhook/telegram/<int:bot_id>")
def webhook(bot_id: int):
    request.get_data(cache=False)  # read the body, as the real webhook does
    return jsonify(ok=True)


@app.get("/health")
def health():
    return jsonify(status="ok")
