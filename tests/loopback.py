"""An HTTP server on 127.0.0.1 for tests that need something to deliver to (webhook receivers)."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (request path, headers, body) -> (status, reply body, extra reply headers)
Respond = Callable[[str, dict, bytes], tuple[int, bytes, dict]]


@contextmanager
def loopback_server(respond: Respond, *, path: str = "/hooks") -> Iterator[str]:
    """Answers POSTs on a free port with `respond` until the block ends; yields the URL (ending in `path`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, reply, headers = respond(self.path, dict(self.headers), body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
