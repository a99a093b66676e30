#!/usr/bin/python3
"""A stand-in app node for the haproxy scenario: GET CHECK_PATH (the role's haproxy_check_path)
answers 200 (503 while the file /run/fake-app/<address>.sick exists); any other request answers
200 with the node's name and the request's headers as JSON; while /run/fake-app/<address>.slow
exists it first sleeps 5 s (a hung node), and while /run/fake-app/<address>.drop exists it
closes the connection without an answer (what a crashing node does to the request in flight).

    fake-app.py ADDRESS PORT NAME CHECK_PATH
"""

import contextlib
import json
import os
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDRESS, PORT, NAME, CHECK_PATH = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
FLAGS = "/run/fake-app"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == CHECK_PATH:
            sick = os.path.exists(f"{FLAGS}/{ADDRESS}.sick")
            self._send(503 if sick else 200, {"node": NAME, "healthy": not sick})
            return
        if os.path.exists(f"{FLAGS}/{ADDRESS}.slow"):
            time.sleep(5)
        if os.path.exists(f"{FLAGS}/{ADDRESS}.drop"):
            self.close_connection = True
            self.connection.close()
        else:
            self._send(200, {"node": NAME, "path": self.path, "headers": dict(self.headers)})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        # HAProxy closes a check's connection as soon as it has the status line.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer's own looks the address up in DNS (socket.getfqdn), which stalls for
        # seconds in a container without a resolver: a restarted node would look dead that long.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = ADDRESS, PORT


Server((ADDRESS, PORT), Handler).serve_forever()
