"""A small Hugging Face Hub on 127.0.0.1 for tests: the HTTP endpoints huggingface_hub 2.4 calls to push a
folder (`HfApi.create_repo`, `create_branch`, `upload_folder`) and to read it back (`hf_hub_download`,
`snapshot_download`, `HfFileSystem`, so `SentenceTransformer(repo_id)` and `datasets.load_dataset(repo_id)`), and
to list a revision's commits (`list_repo_commits`, which `mteb run -m <user>/<model>` asks for).

    with HubServer() as hub:                      # a free port; hub.url is the HF_ENDPOINT
        os.environ["HF_ENDPOINT"] = hub.url       # (in a subprocess: huggingface_hub reads it at import)
        ...
        hub.files("alice/model")                  # path -> bytes at main (or any revision)
        hub.add_repo("mteb/XQuADRetrieval", "dataset", files=..., commit="194842d6...")  # a repo at a pinned sha

Accounts: TOKEN is user USER's (member of org ORG); OTHER_TOKEN is user OTHER's. No token or an unknown
token gets 401 where the Hub needs one; writing into a namespace the token's user does not own gets 403;
an unknown (or unreadable private) repo gets 404 with `X-Error-Code: RepoNotFound`, an unknown revision
`RevisionNotFound`, an unknown file `EntryNotFound`, as huggingface_hub's `hf_raise_for_status` maps them.
A repo name is unique in its namespace across repo types here: creating it again, as any type, is a 409
(`You already created this <type> repo`; a rule of this server, to test a name taken by another type).

Endpoints (`{type}s` is models or datasets):
    GET  /api/whoami-v2
    POST /api/repos/create                          {name, organization, type, visibility | private}
    POST /api/validate-yaml                         README.md metadata: YAML that parses to a mapping
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]  repo info: sha, private, siblings, cardData
    GET  /api/{type}s/{ns}/{name}/refs              branches (+ pullRequests with include_prs=1)
    GET  /api/{type}s/{ns}/{name}/commits/{rev}     the commits reachable from rev, newest first (one page)
    POST /api/{type}s/{ns}/{name}/branch/{branch}   {startingPoint}; 409 if it exists
    POST /api/{type}s/{ns}/{name}/preupload/{rev}   every file is "regular" (its content goes in the commit)
    POST /api/{type}s/{ns}/{name}/commit/{rev}      NDJSON: header, file (base64), deletedFile, deletedFolder;
                                                    ?create_pr=1 commits to a new refs/pr/N instead
    POST /api/{type}s/{ns}/{name}/discussions       {title, description, pullRequest}: opens refs/pr/N
    GET  /api/{type}s/{ns}/{name}/discussions/{N}   (upload_folder opens a PR this way, then commits to its ref)
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]      ?recursive=
    POST /api/{type}s/{ns}/{name}/paths-info/{rev}  form: paths, expand
    HEAD|GET /[datasets/]{ns}/{name}/resolve/{rev}/{path}  ETag (git blob sha1), X-Repo-Commit, Content-Length,
                                                    Range requests (206); answered directly, no redirect (the
                                                    Hub redirects only LFS / Xet files, to their storage)

The server keeps what it was sent: `hub.commits(repo_id)` lists each commit's added files (bytes as
received), `hub.log` every request as (method, path, status), `hub.unhandled` the requests it does not
implement (answered 404). `with hub.failing(action, status):` answers the requests of that action
("commit", "branch", ...) with that status, to test failures mid-push. Every file is stored as a regular
git file (no LFS / Xet), whatever its size: enough for test models.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER, ORG, OTHER = "alice", "alice-lab", "bob"
TOKEN, OTHER_TOKEN = "hf_test_alice_write", "hf_test_bob_write"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]  # the whole tree at this commit
    added: dict[str, bytes]  # what this commit sent
    summary: str
    date: str
    author: str = USER


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "main", other branches, "refs/pr/N" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    pull_requests: dict[int, dict] = field(default_factory=dict)  # num -> title, description, author, base

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubServer:
    def __init__(self):
        self.tokens = {TOKEN: USER, OTHER_TOKEN: OTHER}
        self.orgs = {USER: [ORG], OTHER: []}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []  # requests this server does not implement (answered 404)
        self._failures: dict[str, int] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- test helpers -------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, repo_type: str = "model", private: bool = False,
                 files: dict[str, bytes] | None = None, commit: str | None = None) -> Repo:
        """A repo holding `files` at main, in a commit of sha `commit` if given (e.g. the revision a task pins)."""
        with self._lock:
            repo = self._new_repo(repo_id, repo_type, private)
            if files or commit:
                self._commit(repo, "main", dict(files or {}), [], "seed", oid=commit)
            return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return dict(repo.commits[self._resolve(repo, revision)].files)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        return list(self.repos[(repo_type, repo_id)].commits.values())

    def pull_requests(self, repo_id: str, repo_type: str = "model") -> dict[int, dict]:
        return dict(self.repos[(repo_type, repo_id)].pull_requests)

    @contextlib.contextmanager
    def failing(self, action: str, status: int = 500):
        """Within the block, answer every request of `action` ("commit", "branch", ...) with `status`."""
        self._failures[action] = status
        try:
            yield
        finally:
            self._failures.pop(action, None)

    # --- state ----------------------------------------------------------------------------------------
    def _oid(self) -> str:
        return hashlib.sha1(f"commit {next(self._counter)} {time.time_ns()}".encode()).hexdigest()

    def _new_repo(self, repo_id: str, repo_type: str, private: bool) -> Repo:
        repo = Repo(repo_id, repo_type, private)
        oid = self._oid()
        repo.commits[oid] = Commit(oid, None, {".gitattributes": GITATTRIBUTES}, {".gitattributes": GITATTRIBUTES},
                                   "initial commit", _now())
        repo.refs["main"] = oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def _commit(self, repo: Repo, ref: str, added: dict[str, bytes], deleted: list[str], summary: str,
                parent: str | None = None, oid: str | None = None, author: str = USER) -> Commit:
        parent = parent or repo.refs[ref]
        files = dict(repo.commits[parent].files)
        for path in deleted:
            for name in [n for n in files if n == path or n.startswith(path.rstrip("/") + "/")]:
                del files[name]
        files.update(added)
        commit = Commit(oid or self._oid(), parent, files, added, summary, _now(), author)
        repo.commits[commit.oid] = commit
        repo.refs[ref] = commit.oid
        return commit

    def _resolve(self, repo: Repo, revision: str) -> str:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _user(self, headers) -> str | None:
        auth = headers.get("authorization") or ""
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header",
                           headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        return self.tokens[token]

    def _can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))

    def _readable(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._can_write(user, repo.namespace)):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo: Repo, user: str | None, create_pr: bool = False, revision: str = "main") -> None:
        """Writing needs the namespace's rights, except opening a pull request or pushing to one's own."""
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repo")
        if self._can_write(user, repo.namespace) or create_pr:
            return
        pr = repo.pull_requests.get(int(revision.rsplit("/", 1)[1])) if revision.startswith("refs/pr/") else None
        if pr is None or pr["author"] != user:
            raise HubError(403, f"You don't have write access to {repo.repo_type} repo {repo.repo_id}")

    def _open_pr(self, repo: Repo, user: str, title: str, description: str, base: str = "main") -> int:
        num = len(repo.pull_requests) + 1
        repo.pull_requests[num] = {"title": title, "description": description, "author": user, "base": base,
                                   "createdAt": _now()}
        repo.refs[f"refs/pr/{num}"] = self._resolve(repo, base)
        return num

    def _discussion(self, repo: Repo, num: int) -> dict:
        pr = repo.pull_requests.get(num)
        if pr is None:
            raise HubError(404, f"Discussion {num} not found")
        return {"num": num, "title": pr["title"], "status": "open", "isPullRequest": True,
                "author": {"name": pr["author"]}, "createdAt": pr["createdAt"],
                "repo": {"name": repo.repo_id, "type": repo.repo_type}, "events": [],
                "changes": {"base": f"refs/heads/{pr['base']}"}, "filesWithConflicts": [], "diff": "",
                "url": f"{self.url}/{PREFIX[repo.repo_type]}{repo.repo_id}/discussions/{num}"}

    # --- API --------------------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        with self._lock:
            user = self._user(headers)
            if parts[:2] == ["api", "whoami-v2"]:
                return self._whoami(user)
            if method == "POST" and parts[:3] == ["api", "repos", "create"]:
                return self._create(user, json.loads(body))
            if method == "POST" and parts[:2] == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body))
            if len(parts) >= 4 and parts[0] == "api" and parts[1] in TYPES:
                repo = self._readable(TYPES[parts[1]], f"{parts[2]}/{parts[3]}", user)
                action, rest = (parts[4], parts[5:]) if len(parts) > 4 else ("info", [])
                self._maybe_fail(action)
                if action == "info" or (action == "revision" and rest):
                    return _json(200, self._info(repo, rest[0] if rest else "main"))
                if action == "refs" and method == "GET":
                    return self._refs(repo, query.get("include_prs") == "1")
                if action == "commits" and method == "GET" and rest:
                    return _json(200, self._commit_log(repo, "/".join(rest)))
                if action == "branch" and method == "POST" and rest:
                    return self._branch(repo, user, "/".join(rest), json.loads(body or b"{}"))
                if action == "preupload" and method == "POST" and rest:
                    return self._preupload(repo, user, rest[0], json.loads(body), query.get("create_pr") == "1")
                if action == "discussions" and method == "POST" and not rest:
                    return self._create_discussion(repo, user, json.loads(body))
                if action == "discussions" and method == "GET" and rest:
                    return _json(200, self._discussion(repo, int(rest[0])))
                if action == "commit" and method == "POST" and rest:
                    return self._commit_api(repo, user, rest[0], body, query.get("create_pr") == "1")
                if action == "tree" and method == "GET" and rest:
                    recursive = query.get("recursive") in ("1", "True", "true")
                    return self._tree(repo, rest[0], "/".join(rest[1:]), recursive)
                if action == "paths-info" and method == "POST" and rest:
                    return self._paths_info(repo, rest[0], parse_qs(body.decode()).get("paths", []))
            resolved = _resolve_path(parts)
            if resolved and method in ("GET", "HEAD"):
                repo_type, repo_id, revision, path = resolved
                return self._file(self._readable(repo_type, repo_id, user), revision, path, headers)
            self.unhandled.append((method, url.path))
            raise HubError(404, f"Not implemented by the test Hub: {method} {url.path}")

    def _maybe_fail(self, action: str) -> None:
        if action in self._failures:
            raise HubError(self._failures[action], f"Injected failure of {action}")

    def _whoami(self, user):
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header",
                           headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        return _json(200, {"type": "user", "id": user, "name": user, "fullname": user.title(),
                           "orgs": [{"type": "org", "name": o} for o in self.orgs.get(user, [])],
                           "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def _create(self, user, payload):
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        if repo_type not in PREFIX:
            raise HubError(400, f"Invalid repo type {repo_type}")
        if not self._can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under namespace {namespace!r}")
        url = f"{self.url}/{PREFIX[repo_type]}{repo_id}"
        for t, rid in self.repos:
            if rid.lower() == repo_id.lower():
                return _json(409, {"error": f"You already created this {t} repo", "url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self._new_repo(repo_id, repo_type, private)
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload):
        text = payload.get("content", "")
        if text.startswith("---"):
            try:
                meta = yaml.safe_load(text.split("---", 2)[1])
            except (yaml.YAMLError, IndexError) as err:
                return _json(400, {"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []})
            if meta is not None and not isinstance(meta, dict):
                return _json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        return _json(200, {"errors": [], "warnings": []})

    def _info(self, repo: Repo, revision: str) -> dict:
        commit = repo.commits[self._resolve(repo, revision)]
        card = {}
        readme = commit.files.get("README.md", b"").decode("utf-8", "replace")
        if readme.startswith("---"):
            try:
                card = yaml.safe_load(readme.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                card = {}
        card = card if isinstance(card, dict) else {}
        return {"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.namespace, "sha": commit.oid, "lastModified": commit.date,
                "createdAt": next(iter(repo.commits.values())).date, "private": repo.private, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": card.get("tags", []), "cardData": card,
                "siblings": [{"rfilename": p, "size": len(c), "blobId": git_blob_sha(c)}
                             for p, c in sorted(commit.files.items())]}

    def _refs(self, repo: Repo, include_prs: bool):
        def ref(name, full):
            return {"name": name, "ref": full, "targetCommit": repo.refs[name]}
        out = {"branches": [ref(n, f"refs/heads/{n}") for n in repo.refs if not n.startswith("refs/")],
               "converts": [], "tags": []}
        if include_prs:
            out["pullRequests"] = [ref(n, n) for n in repo.refs if n.startswith("refs/pr/")]
        return _json(200, out)

    def _commit_log(self, repo: Repo, revision: str) -> list[dict]:
        out, oid = [], self._resolve(repo, revision)
        while oid is not None:
            commit = repo.commits[oid]
            out.append({"id": commit.oid, "title": commit.summary, "message": "", "date": commit.date,
                        "authors": [{"user": commit.author}]})
            oid = commit.parent
        return out

    def _branch(self, repo, user, branch, payload):
        self._writable(repo, user)
        if branch in repo.refs:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        repo.refs[branch] = self._resolve(repo, payload.get("startingPoint") or "main")
        return _json(200, {})

    def _create_discussion(self, repo, user, payload):
        if user is None:
            raise HubError(401, "You must be authenticated to open a discussion")
        if not payload.get("pullRequest"):
            raise HubError(400, "The test Hub only opens pull requests")
        num = self._open_pr(repo, user, payload.get("title", ""), payload.get("description", ""))
        return _json(200, self._discussion(repo, num))

    def _preupload(self, repo, user, revision, payload, create_pr):
        self._writable(repo, user, create_pr, revision)
        files = repo.commits[self._resolve(repo, revision)].files
        return _json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                      "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
                                     for f in payload["files"]], "commitOid": repo.refs.get(revision)})

    def _commit_api(self, repo, user, revision, body, create_pr):
        self._writable(repo, user, create_pr, revision)
        base = self._resolve(repo, revision)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header")
        header, added, deleted = lines[0]["value"], {}, []
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file":
                added[value["path"]] = base64.b64decode(value["content"]) if value.get("encoding") == "base64" \
                    else value["content"].encode()
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                raise HubError(400, f"The test Hub does not take {key!r} operations (no LFS)")
        if header.get("parentCommit") and not base.startswith(header["parentCommit"]):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        ref, pr_url = revision, None
        if create_pr:
            if revision not in repo.refs or revision.startswith("refs/"):
                raise HubError(400, f"Cannot open a pull request against {revision}: not a branch")
            num = self._open_pr(repo, user, header.get("summary", ""), header.get("description", ""), revision)
            ref, pr_url = f"refs/pr/{num}", self._discussion(repo, num)["url"]
        elif revision not in repo.refs:
            raise HubError(400, f"Cannot commit to {revision}: not a branch")
        commit = self._commit(repo, ref, added, deleted, header.get("summary", ""), author=user)
        return _json(200, {"success": True, "commitOid": commit.oid, "pullRequestUrl": pr_url,
                           "commitUrl": f"{self.url}/{PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"})

    def _entries(self, files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        out, dirs = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            for depth in range(1, len(rest) if recursive else min(len(rest), 2)):
                dirs.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                out.append(_file_entry(path, files[path]))
        out += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(dirs)]
        return out

    def _tree(self, repo, revision, folder, recursive):
        files = repo.commits[self._resolve(repo, revision)].files
        if folder and not any(p.startswith(folder.rstrip("/") + "/") for p in files):
            raise HubError(404, f"{folder} does not exist", "EntryNotFound")
        return _json(200, self._entries(files, folder, recursive))

    def _paths_info(self, repo, revision, paths):
        files = repo.commits[self._resolve(repo, revision)].files
        out = []
        for path in paths:
            if path in files:
                out.append(_file_entry(path, files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in files):
                out.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                            "path": path})
        return _json(200, out)

    def _file(self, repo, revision, path, headers):
        oid = self._resolve(repo, revision)
        files = repo.commits[oid].files
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        content = files[path]
        out = {"ETag": f'"{git_blob_sha(content)}"', "X-Repo-Commit": oid, "Accept-Ranges": "bytes",
               "Content-Type": "application/octet-stream", "Last-Modified": email.utils.formatdate(usegmt=True)}
        rng = headers.get("range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].split(",")[0].partition("-")
            if start_s:
                start, end = int(start_s), min(int(end_s) if end_s else len(content) - 1, len(content) - 1)
            else:
                start, end = max(len(content) - int(end_s), 0), len(content) - 1
            if start >= len(content):
                return 416, {**out, "Content-Range": f"bytes */{len(content)}"}, b""
            out["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return 206, out, content[start:end + 1]
        return 200, out, content


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _json(status: int, payload) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _file_entry(path: str, content: bytes) -> dict:
    return {"type": "file", "oid": git_blob_sha(content), "size": len(content), "path": path}


def _resolve_path(parts: list[str]) -> tuple[str, str, str, str] | None:
    """(repo type, repo id, revision, file path) of /[datasets/]{ns}/{name}/resolve/{rev}/{path}."""
    repo_type = "model"
    if parts and parts[0] in TYPES:
        repo_type, parts = TYPES[parts[0]], parts[1:]
    if len(parts) >= 5 and parts[2] == "resolve":
        return repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _serve(self, method: str) -> None:
        hub: HubServer = self.server.hub
        body = self._body() if method in ("POST", "PUT") else b""
        try:
            status, headers, payload = hub.handle(method, self.path, self.headers, body)
        except HubError as err:
            headers = {"Content-Type": "application/json", **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            status, payload = err.status, json.dumps({"error": err.message}).encode()
        except Exception as err:  # noqa: BLE001 -- a bug in the test Hub: answer 500 and say so, never hang up
            status, headers, payload = 500, {"Content-Type": "application/json"}, json.dumps(
                {"error": f"test Hub error: {type(err).__name__}: {err}"}).encode()
        hub.log.append((method, urlsplit(self.path).path, status))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")
