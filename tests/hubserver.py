"""A Hugging Face Hub on 127.0.0.1, enough of it for huggingface_hub's real client.

It speaks the parts ``sulphur models pull`` uses, as huggingface_hub 2.x reads them
(``hf_api.list_repo_tree``, ``file_download.get_hf_file_metadata`` / ``http_get``):

- ``GET /api/models/{repo}/tree/{revision}[/{path}]?recursive=…`` -> JSON entries
  ``{type, oid, size, path, lfs: {oid, size, pointerSize}}``;
- ``HEAD|GET /{repo}/resolve/{revision}/{path}`` with ``X-Repo-Commit``, ``ETag`` (the
  sha256 for LFS files, the git blob id otherwise), ``X-Linked-Size``/``X-Linked-Etag``,
  ``Accept-Ranges`` and ``Range`` -> 206;
- errors as the Hub sends them: ``X-Error-Code`` RepoNotFound (401), RevisionNotFound
  and EntryNotFound (404), GatedRepo (401 without a token, 403 with a wrong one);
- ``GET /files/{name}``: a plain HTTPS-style download (a GitHub release asset stand-in).

Faults a test can plant: ``drop_once`` (send half a file, then cut the connection, once
per path), ``drop_always`` (every GET of the path is cut), ``corrupt`` (serve other
bytes of the published size), ``truncate`` (serve fewer bytes than published), ``slow``
(1 MiB every 0.2 s, so a test can interrupt a download half way).
``requests`` records (method, path, Range) of every request.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_MIN = 64  # files at least this big are stored as LFS (the Hub's rule is by type/size too)


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False

    @property
    def commit(self) -> str:
        h = hashlib.sha1()
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + self.files[path])
        return h.hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return len(data) >= LFS_MIN or path.endswith((".gguf", ".safetensors", ".pth"))


@dataclass
class HubServer:
    token: str = "hf_loopback_token"
    repos: dict[str, Repo] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)   # /files/<name>
    drop_once: set[str] = field(default_factory=set)
    drop_always: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    slow: set[str] = field(default_factory=set)              # sent 1 MiB at a time, 0.2 s apart
    requests: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, files: dict[str, bytes], *, gated: bool = False) -> Repo:
        self.repos[repo_id] = Repo(dict(files), gated)
        return self.repos[repo_id]

    def gets(self, path_suffix: str) -> list[str]:
        """The Range header of every GET whose path ends with ``path_suffix`` ("" for none)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith(path_suffix)]

    def __enter__(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    # ------------------------------------------------------------------ plumbing

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, json.dumps({"error": message}).encode(),
                    {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"})

    def _authorized(self, repo: Repo) -> str:
        """"" when the caller may download; else the status + message the Hub sends."""
        if not repo.gated:
            return ""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return "401"
        return "" if auth == f"Bearer {self.hub.token}" else "403"

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self._route()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._route()

    def _route(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        with self.hub._lock:
            self.hub.requests.append((self.command, path, self.headers.get("Range", "")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            self._tree(f"{parts[2]}/{parts[3]}", parts[5], "/".join(parts[6:]), parse_qs(url.query))
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        elif parts[0] == "files" and len(parts) == 2 and parts[1] in self.hub.files:
            self._send_file(path, self.hub.files[parts[1]], {})
        else:
            self._error(404, "EntryNotFound", f"no route {path}")

    def _repo(self, repo_id: str, revision: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    # ------------------------------------------------------------------ API

    def _tree(self, repo_id: str, revision: str, folder: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{folder}/" if folder else ""
        entries, dirs = [], set()
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest:
                for i in range(1, rest.count("/") + 1 if recursive else 2):
                    dirs.add(prefix + "/".join(rest.split("/")[:i]))
                if not recursive:
                    continue
            data = repo.files[path]
            entry = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
            if is_lfs(path, data):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)]
        self._reply(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        denied = self._authorized(repo)
        if denied:
            self._error(int(denied), "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access to it and be authenticated.")
            return
        if path not in repo.files:
            self._reply(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
            return
        data = repo.files[path]
        etag = hashlib.sha256(data).hexdigest() if is_lfs(path, data) else git_blob_id(data)
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"'}
        if is_lfs(path, data):
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        self._send_file(f"{repo_id}/{path}", data, headers)

    # ------------------------------------------------------------------ bodies

    def _send_file(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        hub = self.hub
        if self.command == "GET" and key.lstrip("/").removeprefix("files/") in hub.corrupt | hub.truncate:
            name = key.lstrip("/").removeprefix("files/")
            data = bytes([data[0] ^ 0xFF]) + data[1:] if name in hub.corrupt else data[: len(data) // 2]
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and self.command == "GET":
            start = int(rng[6:].split("-")[0])
        body = data[start:]
        status = 206 if start else 200
        headers = dict(headers, **{"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut = self._cut(key.lstrip("/").removeprefix("files/"))
        if key.lstrip("/").removeprefix("files/") in hub.slow and self.command == "GET":
            self._trickle(status, body, headers)
            return
        if not cut or self.command == "HEAD":
            self._reply(status, body, headers)
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: max(1, len(body) // 2)])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _trickle(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = 1 << 20
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (interrupted)

    def _cut(self, key: str) -> bool:
        if self.command != "GET":
            return False
        with self.hub._lock:
            if key in self.hub.drop_always:
                return True
            if key in self.hub.drop_once:
                self.hub.drop_once.discard(key)
                return True
        return False
