"""Upload a built folder to the Hub as one push, and say in one PushError line what went wrong.

The Hub is huggingface_hub's: HF_ENDPOINT (read when huggingface_hub is imported) for a private Hub, the
token from --token, else huggingface_hub's own lookup (`get_token()`: HF_TOKEN, then the token `hf auth
login` stored). The calls: whoami (checks the token; a closed port fails here at once), repo lookup /
create_repo, create_branch for a new --revision (`--revision refs/pr/N` adds to an open pull request),
upload_folder. --create-pr opens a pull request against main of an existing repo, also one the token may
not write to. Every failure is one PushError line; one after this run created the repo says so, and one
during the upload says what it left on the Hub (huggingface_hub 2.4 with hf_xet uploads a large folder in
several commits, and opens the pull request before the first).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError

from hf_hybrid.errors import PushError

logger = logging.getLogger(__name__)
REPO_TYPES = ("model", "dataset", "space")
_HUB_ERRORS = (HfHubHTTPError, httpx2.TransportError, OSError)


@dataclass
class PushResult:
    repo_id: str
    repo_type: str
    url: str  # the repo, the branch, or the pull request
    commit: str | None  # None for a dry run
    files: list[str]
    created: bool = False
    folder: Path | None = None  # the dry run's folder

    def __str__(self) -> str:
        if self.commit is None:
            return f"dry run: {len(self.files)} files for {self.repo_type} repo {self.repo_id} in {self.folder}"
        made = "created and " if self.created else ""
        return f"{made}pushed {len(self.files)} files to {self.url} (commit {self.commit[:10]})"


def folder_files(root: Path) -> list[Path]:
    """The files under `root`, sorted, without hidden files and folders."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(root).parts))


def check_write_access(repo_id: str, token: str | None = None) -> None:
    """Before long work whose result is to be pushed (training): a token exists and, when the Hub answers,
    it accepts it and its user may write to the repo's namespace (their own or one of their organizations).
    An unreachable Hub is only a warning here: the push after the work says it again."""
    token, source = _token(token)
    api = HfApi(token=token)
    try:
        me = api.whoami()
        namespaces = {me["name"], *(org["name"] for org in me.get("orgs") or [])}
        namespace = repo_id.split("/")[0]
        if namespace not in namespaces:
            raise PushError(f"the token from {source} is {me['name']}'s, who may not write to namespace {namespace} "
                            f"(use --push_to_hub {me['name']}/{repo_id.split('/')[-1]}); nothing was trained")
    except HfHubHTTPError as err:
        if err.response.status_code == 401:
            raise PushError(f"the Hub at {api.endpoint} refused the token from {source} "
                            f"({_server_message(err)}); nothing was trained") from None
        logger.warning("could not check the Hub token: %s", _server_message(err))
    except (httpx2.TransportError, OSError) as err:
        logger.warning("could not reach the Hub at %s to check the token (%s): the push at the end may fail",
                       api.endpoint, type(err).__name__)


def check_pr(create_pr: bool, revision: str | None) -> None:
    if create_pr and revision and revision != "main":
        raise PushError(f"--create-pr opens a pull request against main: drop --revision {revision}")


def _token(token: str | None) -> tuple[str, str]:
    """The token to push with, and where it came from (for the message when the Hub refuses it)."""
    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: unset it to push to the Hub")
    source = "--token" if token else "HF_TOKEN" if os.environ.get("HF_TOKEN") else "the login of `hf auth login`"
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`")
    return token, source


@dataclass
class _HubPush:
    """One push to one repo: how far it got (`stage`), so a failure can say what it left on the Hub."""
    api: HfApi
    repo_id: str
    repo_type: str
    create_pr: bool
    stage: str = ""
    user: str = "this"
    created: bool = False
    before: dict[str, str] | None = None  # the refs before upload_folder

    @property
    def kind(self) -> str:
        return f"{self.repo_type} repo {self.repo_id}"

    @property
    def where(self) -> str:
        return f"{self.api.endpoint}/{'' if self.repo_type == 'model' else self.repo_type + 's/'}{self.repo_id}"

    def open_repo(self, private: bool, space_sdk: str | None, branch: str | None) -> None:
        """Check the token, then look up (--create-pr) or create the repo, and the branch."""
        api, repo_id, repo_type = self.api, self.repo_id, self.repo_type
        self.stage = f"checking the token with {api.endpoint}"
        self.user = api.whoami()["name"]
        if self.create_pr:
            self.stage = f"looking up {self.kind}"
            api.repo_info(repo_id, repo_type=repo_type)
        else:
            self.stage = f"creating {self.kind}"
            self.create_repo(private, space_sdk)
        if branch and not branch.startswith("refs/pr/"):  # refs/pr/N: add to an open pull request
            self.stage = f"creating branch {branch} of {self.kind}"
            api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)

    def create_repo(self, private: bool, space_sdk: str | None) -> None:
        api, repo_id, repo_type = self.api, self.repo_id, self.repo_type
        existed = api.repo_exists(repo_id, repo_type=repo_type)
        if existed and private and not api.repo_info(repo_id, repo_type=repo_type).private:
            raise PushError(f"{self.kind} exists and is public: --private only makes new repos private "
                            f"(make it private on the Hub first, or drop --private)")
        if existed:
            return
        api.create_repo(repo_id, repo_type=repo_type, private=True if private else None, exist_ok=True,
                        space_sdk=space_sdk)
        if not api.repo_exists(repo_id, repo_type=repo_type):  # the name is taken by another type
            taken = [t for t in REPO_TYPES if t != repo_type and api.repo_exists(repo_id, repo_type=t)]
            raise PushError(f"cannot create {self.kind} on {api.endpoint}: the name is taken"
                            + (f" by a {taken[0]} repo" if taken else "")
                            + "; pick another --repo-id")
        self.created = True

    def upload_folder(self, folder: Path, branch: str | None, commit_message: str | None):
        self.stage = f"reading the refs of {self.kind}"
        self.before = _refs(self.api, self.repo_id, self.repo_type)
        self.stage = f"uploading to {self.kind}"
        return self.api.upload_folder(repo_id=self.repo_id, folder_path=folder, repo_type=self.repo_type,
                                      revision=branch, create_pr=self.create_pr,
                                      commit_message=commit_message or f"Upload {self.repo_type} with hf-hybrid push")

    def failure(self, err: Exception, token_source: str) -> str:
        """The one line for a failed push: what failed, and what this push left on the Hub."""
        message = self.cause(err, token_source)
        committed = False
        if self.stage.startswith("uploading"):
            note, committed = _partial(self.api, self.repo_id, self.repo_type, self.before)
            message += note
        if self.created:
            message += (f" -- note: this push created {self.kind} ({self.where})"
                        f"{'' if committed else ', which is left empty'}; push again or delete it")
        return message

    def cause(self, err: Exception, token_source: str) -> str:
        stage, endpoint = self.stage, self.api.endpoint
        if isinstance(err, PushError):
            return str(err)
        if not isinstance(err, HfHubHTTPError):
            return f"{stage} failed: cannot reach the Hub at {endpoint} ({type(err).__name__}: {err})"
        status = err.response.status_code
        if status == 401 and stage.startswith("checking the token"):
            return f"the Hub at {endpoint} refused the token from {token_source} ({_server_message(err)})"
        if status == 403:
            namespace = self.repo_id.split("/")[0]
            return (f"{stage} failed: {_server_message(err)} (the token is {self.user}'s: it may not write to "
                    f"namespace {namespace}{'' if self.create_pr else '; --create-pr opens a pull request instead'})")
        if status == 404 and stage.startswith("looking up"):
            return (f"{self.kind} does not exist on {endpoint} ({_server_message(err)}): "
                    "--create-pr opens a pull request on an existing repo")
        return f"{stage} failed: {_server_message(err)}"


def upload(folder: str | Path, repo_id: str, *, repo_type: str = "model", private: bool = False,
           revision: str | None = None, create_pr: bool = False, commit_message: str | None = None,
           token: str | None = None, space_sdk: str | None = None) -> PushResult:
    """Upload a built folder as one push: create the repo (and branch) if needed, then upload_folder.
    A new Space repo needs its `space_sdk` (e.g. "gradio")."""
    folder = Path(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder_files(folder))
    branch = revision if revision and revision != "main" else None
    check_pr(create_pr, revision)
    token, source = _token(token)
    hub = _HubPush(HfApi(token=token), repo_id, repo_type, create_pr)
    try:
        hub.open_repo(private, space_sdk, branch)
        info = hub.upload_folder(folder, branch, commit_message)
    except (PushError, *_HUB_ERRORS) as err:
        raise PushError(hub.failure(err, source)) from None
    url = info.pr_url or (f"{hub.where}/tree/{branch}" if branch else hub.where)
    return PushResult(repo_id, repo_type, url, info.oid, files, hub.created)


def _server_message(err) -> str:
    """`404 Not Found: Repository not found`: one line from a huggingface_hub HTTP error."""
    response = getattr(err, "response", None)
    status = f"{response.status_code} {response.reason_phrase}".strip() if response is not None else ""
    message = (getattr(err, "server_message", None) or "").strip().splitlines()
    if not message:
        message = [line for line in str(err).splitlines() if line.strip()][:1]
    return ": ".join(part for part in (status, message[0] if message else "") if part)


def _refs(api, repo_id: str, repo_type: str) -> dict[str, str]:
    """Branch and pull request refs -> commit."""
    refs = api.list_repo_refs(repo_id, repo_type=repo_type, include_pull_requests=True)
    return {r.ref: r.target_commit for r in [*refs.branches, *(refs.pull_requests or [])]}


def _partial(api, repo_id: str, repo_type: str, before: dict[str, str]) -> tuple[str, bool]:
    """What a failed upload_folder left on the Hub, and whether it left anything: it commits a large folder in
    several parts (huggingface_hub 2.4 with hf_xet) and opens a pull request before its first commit."""
    try:
        after = _refs(api, repo_id, repo_type)
    except _HUB_ERRORS as err:  # the Hub may be gone by now
        return f" -- could not check what the upload left on the Hub ({type(err).__name__})", True
    changed = [f"{ref} {'moved' if ref in before else 'was created'}" for ref, commit in after.items()
               if before.get(ref) != commit]
    if not changed:
        return " -- nothing was committed", False
    return (f" -- the upload stopped part way: {', '.join(changed)} on the Hub and may hold part of the files; "
            "check it, then push again (--revision refs/pr/N adds to an open pull request)"), True
