"""A minimal OCI distribution registry on 127.0.0.1 (plain HTTP) for push tests: blob
upload (POST, PATCH, PUT with digest), blob and manifest HEAD/GET, manifest PUT."""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class Registry:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}  # (repository, tag or digest)
        self.uploads: dict[str, bytes] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()


def _handler(registry: Registry):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def body(self) -> bytes:
            if self.headers.get("Transfer-Encoding") == "chunked":
                data = b""
                while size := int(self.rfile.readline().strip(), 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def lookup(self, head: bool) -> None:
            if self.path == "/v2/":
                return self.reply(200, b"{}", {"Docker-Distribution-API-Version": "registry/2.0"}, head)
            if m := re.match(r"^/v2/(.+)/manifests/(.+)$", self.path):
                if (m[1], m[2]) in registry.manifests:
                    media_type, data = registry.manifests[(m[1], m[2])]
                    digest = "sha256:" + hashlib.sha256(data).hexdigest()
                    return self.reply(200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest}, head)
            if (m := re.match(r"^/v2/(.+)/blobs/(.+)$", self.path)) and m[2] in registry.blobs:
                return self.reply(200, registry.blobs[m[2]], {"Docker-Content-Digest": m[2]}, head)
            self.reply(404, b'{"errors":[{"code":"NOT_FOUND"}]}', head=head)

        def do_GET(self):
            self.lookup(head=False)

        def do_HEAD(self):
            self.lookup(head=True)

        def do_POST(self):
            m = re.match(r"^/v2/(.+)/blobs/uploads/", self.path)
            self.body()
            upload = str(uuid.uuid4())
            registry.uploads[upload] = b""
            self.reply(202, headers={"Location": f"/v2/{m[1]}/blobs/uploads/{upload}", "Range": "0-0", "Docker-Upload-UUID": upload})

        def do_PATCH(self):
            m = re.match(r"^/v2/(.+)/blobs/uploads/([^?]+)", self.path)
            registry.uploads[m[2]] += self.body()
            end = max(0, len(registry.uploads[m[2]]) - 1)
            self.reply(202, headers={"Location": f"/v2/{m[1]}/blobs/uploads/{m[2]}", "Range": f"0-{end}", "Docker-Upload-UUID": m[2]})

        def do_PUT(self):
            if m := re.match(r"^/v2/(.+)/blobs/uploads/([^?]+)\?(.*)$", self.path):
                data = registry.uploads.pop(m[2], b"") + self.body()
                digest = unquote(re.search(r"digest=([^&]+)", m[3])[1])
                if digest != "sha256:" + hashlib.sha256(data).hexdigest():
                    return self.reply(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                registry.blobs[digest] = data
                return self.reply(201, headers={"Location": f"/v2/{m[1]}/blobs/{digest}", "Docker-Content-Digest": digest})
            m = re.match(r"^/v2/(.+)/manifests/(.+)$", self.path)
            data = self.body()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            for reference in (m[2], digest):
                registry.manifests[(m[1], reference)] = (self.headers.get("Content-Type", ""), data)
            self.reply(201, headers={"Docker-Content-Digest": digest, "Location": f"/v2/{m[1]}/manifests/{digest}"})

    return Handler
