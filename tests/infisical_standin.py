"""A local stand-in for the Infisical REST endpoints the Python SDK (infisicalsdk) calls.

Only what RelayMD uses: universal-auth login, get-secret-by-name, list secrets, each
checking the bearer token. Runs stdlib http.server in a thread on a free 127.0.0.1 port and
counts requests so tests can assert caching. Shapes follow infisical_sdk/api_types.py.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LOGIN_PATH = "/api/v1/auth/universal-auth/login"
SECRETS_PATH = "/api/v3/secrets/raw"


class InfisicalStandin:
    """`secrets` maps (environment, secret_path) to {name: value} for `project_id`."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        project_id: str,
        secrets_by_folder: dict[tuple[str, str], dict[str, str]],
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.project_id = project_id
        self.secrets_by_folder = secrets_by_folder
        self.tokens: set[str] = set()
        self.hits: Counter[str] = Counter()  # "login", "get:<name>", "list", "unauthorized"
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _secret(self, name: str, value: str, environment: str, path: str) -> dict[str, Any]:
        return {
            "id": f"id-{name}",
            "_id": f"id-{name}",
            "workspace": self.project_id,
            "environment": environment,
            "version": 1,
            "type": "shared",
            "secretKey": name,
            "secretValue": value,
            "secretComment": "",
            "secretPath": path,
            "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-01T00:00:00.000Z",
            "tags": [],
        }

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if method == "POST" and url.path == LOGIN_PATH:
            self.hits["login"] += 1
            request = json.loads(body or b"{}")
            if (request.get("clientId"), request.get("clientSecret")) != (
                self.client_id,
                self.client_secret,
            ):
                return 401, _error(401, "Unauthorized", "Invalid credentials")
            token = secrets.token_urlsafe(24)
            self.tokens.add(token)
            return 200, {
                "accessToken": token,
                "expiresIn": 7200,
                "accessTokenMaxTTL": 7200,
                "tokenType": "Bearer",
            }
        if method != "GET" or not url.path.startswith(SECRETS_PATH):
            return 404, _error(404, "NotFound", f"Route {method}:{url.path} not found")
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.tokens:
            self.hits["unauthorized"] += 1
            return 401, _error(401, "UnauthorizedError", "Token missing or invalid")
        if query.get("workspaceId") != self.project_id:
            return 404, _error(404, "NotFound", "Project not found")
        environment, path = query.get("environment", ""), query.get("secretPath", "/")
        folder = self.secrets_by_folder.get((environment, path), {})
        if url.path == SECRETS_PATH:
            self.hits["list"] += 1
            listed = [self._secret(n, v, environment, path) for n, v in folder.items()]
            return 200, {"secrets": listed, "imports": []}
        name = unquote(url.path.removeprefix(SECRETS_PATH + "/"))
        self.hits[f"get:{name}"] += 1
        if name not in folder:
            return 404, _error(404, "NotFound", f"Secret with name '{name}' not found")
        return 200, {"secret": self._secret(name, folder[name], environment, path)}

    @contextmanager
    def running(self) -> Iterator[InfisicalStandin]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = standin.handle(self.command, self.path, self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def _error(status: int, error: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "error": error, "message": message}
