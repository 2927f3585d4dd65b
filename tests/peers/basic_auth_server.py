"""Static files behind HTTP basic auth, for tests: a package index (a folder of wheels) as a
private feed serves it, or a git repository over git's "dumb" HTTP protocol as a private git
host does. `python3 basic_auth_server.py DIR USER PASSWORD` prints `PORT <n>` once it listens on
127.0.0.1 and answers 401 to any request without those credentials (USER `*`: any user name
with that password, as git hosts take a personal access token)."""

import base64
import functools
import http.server
import sys

root, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Handler(http.server.SimpleHTTPRequestHandler):
    def check(self):
        sent = self.headers.get("Authorization", "")
        if user == "*" and sent.startswith("Basic "):
            try:
                _, _, given = base64.b64decode(sent[6:]).decode().partition(":")
            except Exception:
                given = None
            if given == password:
                return True
        elif sent == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="feed"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self):
        if self.check():
            super().do_GET()

    def do_HEAD(self):
        if self.check():
            super().do_HEAD()


server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(Handler, directory=root)
)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
