"""A folder served as the Hugging Face Hub's dataset repositories (``root/ORG/NAME/...``): the few
endpoints huggingface_hub and datasets use to find a dataset's files and stream them (repository info,
tree listing, paths-info, ``resolve`` with byte ranges). Point ``HF_ENDPOINT`` at it. Each request is
logged as ``(method, path, range)``."""

import hashlib
import http.server
import json
import os
import re
import threading
import urllib.parse


def _entry(repo_dir: str, path: str) -> dict:
    """A file's entry as the Hub's tree and paths-info list it."""
    full = os.path.join(repo_dir, path)
    with open(full, "rb") as f:
        oid = hashlib.sha1(f.read()).hexdigest()
    return {"type": "file", "oid": oid, "size": os.path.getsize(full), "path": path}


def serve(root):
    """``(server, log)``: the server on a free local port (``server.sha``: the commit it serves)."""
    log = []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _json(self, obj, code=200):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _404(self, code="EntryNotFound"):
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _entries(self, repo_dir, sub, recursive):
            base = os.path.join(repo_dir, sub) if sub else repo_dir
            out = []
            if not os.path.isdir(base):
                return None
            for dirpath, dirs, files in os.walk(base):
                rel = os.path.relpath(dirpath, repo_dir)
                for d in sorted(dirs):
                    p = os.path.normpath(os.path.join(rel, d))
                    out.append({"type": "directory", "oid": srv.sha, "path": p})
                for f in sorted(files):
                    p = os.path.normpath(os.path.join(rel, f))
                    out.append(_entry(repo_dir, p))
                if not recursive:
                    break
            return out

        def handle_any(self):
            u = urllib.parse.urlparse(self.path)
            path = urllib.parse.unquote(u.path)
            log.append((self.command, path, self.headers.get("Range")))
            m = re.match(r"^/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
            if m:
                repo_dir = os.path.join(root, m.group(1))
                if not os.path.isdir(repo_dir):
                    return self._404("RepositoryNotFound")
                files = [e["path"] for e in self._entries(repo_dir, "", True) if e["type"] == "file"]
                return self._json(
                    {
                        "id": m.group(1),
                        "sha": srv.sha,
                        "private": False,
                        "disabled": False,
                        "gated": False,
                        "siblings": [{"rfilename": f} for f in files],
                        "cardData": {},
                        "tags": [],
                        "lastModified": "2026-01-01T00:00:00.000Z",
                    }
                )
            m = re.match(r"^/api/datasets/([^/]+/[^/]+)/tree/([^/]+)/?(.*)$", path)
            if m:
                q = urllib.parse.parse_qs(u.query)
                entries = self._entries(
                    os.path.join(root, m.group(1)),
                    m.group(3),
                    q.get("recursive", ["false"])[0] in ("true", "True", "1"),
                )
                return self._json(entries) if entries is not None else self._404()
            m = re.match(r"^/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)$", path)
            if m:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode()
                form = (
                    urllib.parse.parse_qs(body)
                    if "=" in body and not body.startswith("{")
                    else json.loads(body or "{}")
                )
                paths = form.get("paths", [])
                repo_dir = os.path.join(root, m.group(1))
                out = []
                for p in paths:
                    if os.path.isfile(os.path.join(repo_dir, p)):
                        out.append(_entry(repo_dir, p))
                    elif os.path.isdir(os.path.join(repo_dir, p)):
                        out.append({"type": "directory", "oid": srv.sha, "path": p})
                return self._json(out)
            m = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
            if m:
                full = os.path.join(root, m.group(1), m.group(3))
                if not os.path.isfile(full):
                    return self._404()
                data = open(full, "rb").read()
                start, end, code = 0, len(data) - 1, 200
                r = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if r:
                    if r.group(1):
                        start = int(r.group(1))
                        end = int(r.group(2)) if r.group(2) else len(data) - 1
                    else:
                        start = len(data) - int(r.group(2))
                    end = min(end, len(data) - 1)
                    code = 206
                chunk = data[start : end + 1]
                self.send_response(code)
                self.send_header("X-Repo-Commit", srv.sha)
                self.send_header("ETag", '"%s"' % hashlib.sha1(data).hexdigest())
                self.send_header("Content-Length", str(len(chunk) if self.command != "HEAD" else len(data)))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(chunk)
                return
            return self._404("RepoNotFound")

        do_GET = do_HEAD = do_POST = handle_any

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.sha = "0123456789abcdef0123456789abcdef01234567"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, log
