"""Getting a preset's files: Hub files into the Hugging Face cache, the rest over HTTPS.

``sulphur models pull`` lists what a preset needs (repo id + file pattern, through the
Hub's tree API, or a plain URL), checks the free disk against what is still missing,
then fetches each file with a progress bar. Hub files land where ``hf_hub_download``
would put them (``$HF_HUB_CACHE`` / ``$HF_HOME/hub``), so diffusers, ComfyUI and other
tools reuse them, and :func:`pulled_path` finds them there without a network call.

Resuming: huggingface_hub retries a cut connection inside one call with a Range
request, but since 2.x it deletes its partial file when a call fails. A 12 GB GGUF
should not restart from zero after a Ctrl-C, so for plain HTTP files we fill the
cache's blob ourselves from a partial file we keep (``<blob>.sulphur-part``), check
its size and sha256, and then let ``hf_hub_download`` do the bookkeeping (snapshot
link, refs) on a blob that is already there. Xet-stored files go through
``hf_hub_download`` as they are (hf_xet keeps its own chunk cache).

Nothing here imports huggingface_hub at module level: ``sulphur models`` and every
``ModelFile.local_path`` call use :func:`pulled_path`, which reads the cache layout
with the standard library only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import re
import shutil
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import getproxies

from pipeline.models.home import sulphur_home
from pipeline.project.files import remembered

if TYPE_CHECKING:
    from pipeline.models.registry import ModelFile, Preset

# Deferred imports: httpx2, huggingface_hub — only a pull or a dry run talks to the Hub

DEFAULT_ENDPOINT = "https://huggingface.co"
PART_SUFFIX = ".sulphur-part"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_GLOB = re.compile(r"[*?\[]")


class PullError(Exception):
    """A pull that cannot go on; ``str()`` is the one line a user sees."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: a path in a Hub repo, or a URL."""

    spec: ModelFile
    path: str                 # path in the repo, or the file name of a URL download
    size: int | None
    sha256: str = ""          # expected content hash ("" when nobody published one)
    blob_id: str = ""         # git blob id of a small (non-LFS) Hub file: its cache blob name

    @property
    def source(self) -> str:
        return f"{self.spec.repo}/{self.path}" if self.spec.repo else self.spec.url

    def cached(self) -> Path | None:
        """The finished file on disk, if it is already there (no network)."""
        if self.spec.repo:
            name = self.sha256 or self.blob_id
            blob = repo_cache_folder(self.spec.repo) / "blobs" / name if name else None
            return blob if blob is not None and blob.is_file() else None
        dest = url_download_path(self.spec)
        return dest if dest.is_file() else None


# --------------------------------------------------------------------------- where files live


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hf_token() -> str | None:
    """``$HF_TOKEN`` if set; else None, and huggingface_hub falls back to ``hf auth login``'s token."""
    return os.environ.get("HF_TOKEN") or None


def repo_cache_folder(repo: str) -> Path:
    return hf_cache_dir() / ("models--" + repo.replace("/", "--"))


def url_download_path(spec: ModelFile) -> Path:
    """Files published outside the Hub live in Sulphur's cache, named as their URL names them."""
    name = Path(urlparse(spec.url).path).name or "download"
    return sulphur_home() / "downloads" / name


def _snapshot(spec: ModelFile) -> Path | None:
    folder = repo_cache_folder(spec.repo)
    revision = spec.revision or "main"
    if _COMMIT.match(revision):
        snap = folder / "snapshots" / revision
        return snap if snap.is_dir() else None
    ref = folder / "refs" / revision
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    snap = folder / "snapshots" / commit
    return snap if commit and snap.is_dir() else None


def pattern_root(pattern: str) -> str:
    """The folder a pattern names: ``latent_upsampler/*`` -> ``latent_upsampler``; ``*`` -> ``""``."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1] if _GLOB.search(pattern) else parts:
        if _GLOB.search(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def is_folder(spec: ModelFile) -> bool:
    """Whether ``spec`` names a folder of files (a glob, several patterns, or none) rather than one file."""
    return isinstance(spec.filename, tuple) or bool(_GLOB.search(spec.filename or "*"))


def folder_root(spec: ModelFile) -> str:
    """The repo folder a folder spec is found at: the deepest folder all its patterns share.

    ``latent_upsampler/*`` -> ``latent_upsampler``; ``("model_index.json", "vae/*")`` -> ``""``
    (the snapshot root); ``("transformer/config.json",)`` -> ``transformer``.
    """
    roots = [pattern_root(p) if _GLOB.search(p) else posixpath.dirname(p) for p in spec.patterns or ("*",)]
    return posixpath.commonpath(roots) if all(roots) else ""


def _manifest_path(spec: ModelFile, commit: str) -> Path:
    # Which files a pattern matched when it was pulled: a folder that holds some of them
    # (an interrupted pull) must not count as present. (A one-pattern key is what it always was.)

    names = spec.filename if isinstance(spec.filename, str) else "\0".join(spec.filename)
    key = hashlib.sha256(f"{spec.repo}\0{names}".encode()).hexdigest()[:16]
    return sulphur_home() / "pulled" / spec.repo.replace("/", "--") / commit / f"{key}.json"


def pulled_files(spec: ModelFile) -> dict[str, Path] | None:
    """Repo path -> cached file, for what a pull of folder spec ``spec`` fetched (None unless all there)."""
    snap = _snapshot(spec) if spec.repo and is_folder(spec) else None
    if snap is None:
        return None
    listed = _pull_record(_manifest_path(spec, snap.name))
    if listed is None:
        return None
    files = {rel: snap / rel for rel in sorted(listed)}
    return files if all(p.is_file() for p in files.values()) else None


def _pull_record(path: Path) -> list[str] | None:
    """The repo paths a pull of one folder spec fetched (None: no record, or not one we wrote);
    read once per version of the file: `sulphur models` asks of each folder row where it is,
    whether it is whole and what it holds, and `missing()` asks again."""
    try:
        return remembered(path, _read_pull_record)
    except OSError:  # no record (the stat); _read_pull_record itself never raises
        return None


def _read_pull_record(path: Path) -> list[str] | None:
    """What the record lists, or None for anything but a list of names (a record not ours)."""
    try:
        listed = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return listed if isinstance(listed, list) and all(isinstance(n, str) for n in listed) else None


def pulled_path(spec: ModelFile) -> Path | None:
    """Where ``sulphur models pull`` put ``spec``, or None (stdlib only: no network, no hub import)."""
    if not spec.repo:
        if spec.url:
            dest = url_download_path(spec)
            return dest if dest.is_file() else None
        return None
    snap = _snapshot(spec)
    if snap is None:
        return None
    if not is_folder(spec):
        p = snap / spec.filename
        return p if p.exists() else None
    if pulled_files(spec) is None:
        return None
    return snap / folder_root(spec)


def where_found(spec: ModelFile) -> str:
    """How ``sulphur models`` describes where a file was found (or that it was not)."""
    if spec.env and os.environ.get(spec.env) and Path(os.environ[spec.env]).expanduser().exists():
        return f"${spec.env}"
    path = spec.local_path()
    if path is None:
        return "missing"
    if hf_cache_dir() in path.parents:
        return "HF cache"
    if spec.url and path == url_download_path(spec):
        return "downloaded"
    return "local"


# --------------------------------------------------------------------------- listing


def plan(preset: Preset) -> list[RemoteFile]:
    """Every file of ``preset`` that has a remote source, with sizes (one tree call per repo)."""
    trees: dict[tuple[str, str], list[Any]] = {}
    out: list[RemoteFile] = []
    for spec in preset.files:
        if spec.env and os.environ.get(spec.env) and Path(os.environ[spec.env]).expanduser().exists():
            continue  # the user points at their own copy
        if spec.repo:
            if not trees:
                _reachable(hf_endpoint())
            key = (spec.repo, spec.revision or "main")
            if key not in trees:
                trees[key] = _list_tree(*key)
            out.extend(_match(spec, trees[key]))
        elif spec.url:
            size = spec.size if spec.size is not None else _url_size(spec.url)
            out.append(RemoteFile(spec, url_download_path(spec).name, size, spec.sha256))
    return out


def _reachable(url: str, timeout: float = 5.0) -> None:
    """PullError unless something answers at ``url``'s host and port. Offline, huggingface_hub
    retried for about 23 s, printing a warning block per try, before the one-line error; one
    TCP connect says it at once. Skipped behind a proxy (the direct route may be closed) and
    with HF_HUB_OFFLINE (the hub's own message names that)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or \
            any(getproxies().values()):  # the environment's proxies, and macOS's and Windows' own
        return
    parts = urlparse(url)
    if not parts.hostname:
        raise PullError(f"{url}: not a URL (HF_ENDPOINT?)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__  # gaierror: "Name or service not known"
        raise PullError(f"cannot reach {url}: {reason}") from None


def _url_size(url: str) -> int | None:
    """Content-Length of a plain download (after redirects), for the listing and the disk check."""
    import httpx2
    from huggingface_hub.utils import get_session

    try:
        response = get_session().head(url, follow_redirects=True)
    except httpx2.TransportError as exc:
        raise PullError(f"cannot reach {url}: {type(exc).__name__}") from None
    if response.status_code >= 400:
        raise PullError(f"{url}: HTTP {response.status_code}")
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _list_tree(repo: str, revision: str) -> list[Any]:
    from huggingface_hub import HfApi  # the HTTP client: only a pull pays for it

    api = HfApi(endpoint=hf_endpoint(), token=hf_token())
    with _hub_errors(repo):
        return [e for e in api.list_repo_tree(repo, revision=revision, recursive=True) if hasattr(e, "size")]


def _match(spec: ModelFile, tree: list[Any]) -> list[RemoteFile]:
    found: dict[str, Any] = {}
    for pattern in spec.patterns or ("*",):
        if _GLOB.search(pattern):
            hits = [e for e in tree if fnmatch.fnmatchcase(e.path, pattern)]
        else:
            hits = [e for e in tree if e.path == pattern]
        if not hits:  # every pattern must match: a folder missing one part would not load
            raise PullError(f"{spec.repo}@{spec.revision or 'main'} has no file matching {pattern!r} ({spec.role})")
        found |= {e.path: e for e in hits}
    hits = list(found.values())
    files = []
    for e in sorted(hits, key=lambda e: e.path):
        lfs_sha = e.lfs.sha256 if e.lfs is not None else ""
        if spec.sha256 and len(hits) == 1 and lfs_sha and lfs_sha != spec.sha256:
            raise PullError(f"{spec.repo}/{e.path} on the Hub has sha256 {lfs_sha[:12]}…, the preset expects "
                            f"{spec.sha256[:12]}… (the published file changed; pin a revision)")
        sha = spec.sha256 if len(hits) == 1 and spec.sha256 else lfs_sha
        files.append(RemoteFile(spec, e.path, e.size, sha, "" if e.lfs is not None else e.blob_id))
    return files


def human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover - the loop returns


# --------------------------------------------------------------------------- pulling


def pull(preset: Preset, *, dry_run: bool = False, out: IO[str] | None = None) -> list[Path]:
    """Fetch every missing file of ``preset``; returns the local paths (empty on a dry run)."""
    out = out or sys.stderr
    files = plan(preset)
    todo = [f for f in files if f.cached() is None]
    need = sum(f.size or 0 for f in todo)
    for f in files:
        part = _part_size(f)
        state = "cached" if f not in todo else f"partial, resumes at {human(part)}" if part else "to fetch"
        print(f"  {f.spec.role:<18} {f.source}  {human(f.size)}  [{state}]", file=out)
    print(f"{preset.name}: {len(files)} file(s), {human(sum(f.size or 0 for f in files))}; "
          f"{len(todo)} to fetch, {human(need)}", file=out)
    if dry_run:
        return []
    # Access first (a gated enhancer should not fail the pull after 20 GB of transformer).
    metas = {f: _metadata(f) for f in todo if f.spec.repo}
    _check_disk(need, todo)
    paths = [_fetch(f, metas.get(f)) for f in files]
    _write_manifests(files)
    return paths


def _check_disk(need: int, todo: Iterable[RemoteFile]) -> None:
    """Refuse before the first byte when the files cannot fit (partial files already count)."""
    if not need:
        return
    for target in {hf_cache_dir() if f.spec.repo else url_download_path(f.spec).parent for f in todo}:
        probe = target
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        have = sum(_part_size(f) for f in todo)
        if need - have > free:
            raise PullError(f"not enough disk: {human(need - have)} to fetch, {human(free)} free at {target}")


def _part_size(f: RemoteFile) -> int:
    part = _partial(f)
    return part.stat().st_size if part is not None and part.exists() else 0


def _partial(f: RemoteFile) -> Path | None:
    if f.spec.repo:
        return repo_cache_folder(f.spec.repo) / "blobs" / f"{f.sha256 or f.blob_id}{PART_SUFFIX}" \
            if (f.sha256 or f.blob_id) else None
    return url_download_path(f.spec).with_name(url_download_path(f.spec).name + PART_SUFFIX)


def _metadata(f: RemoteFile) -> Any:
    """The resolve HEAD of a Hub file: etag, size, where to download, and whether we may."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    with _hub_errors(f.spec.repo):
        url = hf_hub_url(f.spec.repo, f.path, revision=f.spec.revision or "main", endpoint=hf_endpoint())
        return get_hf_file_metadata(url, token=hf_token(), endpoint=hf_endpoint())


def _fetch(f: RemoteFile, meta: Any = None) -> Path:
    if not f.spec.repo:
        dest = url_download_path(f.spec)
        if not dest.is_file():
            resumable_get(f.spec.url, dest, size=f.size, sha256=f.sha256, headers={}, label=dest.name)
        return dest
    from huggingface_hub import hf_hub_download, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    repo, revision, endpoint, token = f.spec.repo, f.spec.revision or "main", hf_endpoint(), hf_token()
    meta = meta or _metadata(f)
    with _hub_errors(repo):
        url = hf_hub_url(repo, f.path, revision=revision, endpoint=endpoint)
        blob = repo_cache_folder(repo) / "blobs" / str(meta.etag)
        if not blob.exists() and meta.xet_file_data is None:
            headers = build_hf_headers(token=token)
            if urlparse(meta.location).netloc != urlparse(url).netloc:
                headers.pop("authorization", None)  # a signed CDN URL: the token stays on the Hub
            resumable_get(meta.location, blob, size=meta.size or f.size, sha256=f.sha256,
                          headers=headers, label=f.path)
        path = hf_hub_download(repo, f.path, revision=revision, cache_dir=hf_cache_dir(),
                               token=token, endpoint=endpoint)
    if meta.xet_file_data is not None and f.sha256:
        try:  # hf_xet checks chunks, not the published sha256 of the whole file
            _check_sha256(Path(path).resolve(), f.sha256, f.source, remove=True)
        except PullError:
            Path(path).unlink(missing_ok=True)  # the snapshot link to the removed blob
            raise
    return Path(path)


def _write_manifests(files: list[RemoteFile]) -> None:
    by_spec: dict[ModelFile, list[str]] = {}
    for f in files:
        if f.spec.repo and is_folder(f.spec):
            by_spec.setdefault(f.spec, []).append(f.path)
    for spec, paths in by_spec.items():
        snap = _snapshot(spec)
        if snap is not None:
            manifest = _manifest_path(spec, snap.name)
            manifest.parent.mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps(sorted(paths)))


def resumable_get(url: str, dest: Path, *, size: int | None, sha256: str, headers: dict[str, str],
                  label: str) -> None:
    """Download ``url`` to ``dest`` through ``dest.sulphur-part``, resuming what an earlier run left.

    The part is checked (size, then sha256 when one is known) before it becomes ``dest``;
    a bad file is removed and refused, a cut connection keeps it for the next run.
    """
    from filelock import FileLock  # huggingface_hub's own dependency

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Two pulls of the same file would append to one part: the second waits, then finds dest.

    lock = sulphur_home() / "locks" / (hashlib.sha256(str(dest).encode()).hexdigest()[:24] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if not dest.exists():
            _get_part(url, dest, size=size, sha256=sha256, headers=headers, label=label)


def _get_part(url: str, dest: Path, *, size: int | None, sha256: str, headers: dict[str, str],
              label: str) -> None:
    import httpx2
    from huggingface_hub.file_download import http_get

    part = dest.with_name(dest.name + PART_SUFFIX)
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    try:
        with part.open("ab") as fh:
            # http_get retries a dropped connection itself (Range from where it stopped),
            # shows a bar with total size and ETA, and raises OSError on a size mismatch.
            http_get(url, fh, resume_size=have, headers=headers, expected_size=size, displayed_filename=label)
    except OSError as exc:
        if "Consistency check failed" in str(exc):
            part.unlink(missing_ok=True)
            got = str(exc).split("has size", 1)[-1].split("(")[0].strip()
            raise PullError(f"{label}: refused, the server sent {got} bytes where {size} were published "
                            "(partial file removed)") from None
        raise
    except (httpx2.TransportError, httpx2.HTTPStatusError) as exc:
        kept = part.stat().st_size if part.exists() else 0
        raise PullError(f"{label}: download interrupted at {human(kept)} of {human(size)} ({type(exc).__name__}); "
                        "run the pull again to resume") from None
    if sha256:
        _check_sha256(part, sha256, label, remove=True)
    os.replace(part, dest)


def _check_sha256(path: Path, expected: str, label: str, *, remove: bool) -> None:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    if h.hexdigest() != expected:
        if remove:
            path.unlink(missing_ok=True)
        raise PullError(f"{label}: refused, sha256 {h.hexdigest()[:12]}… does not match the published "
                        f"{expected[:12]}… (file removed)")


class _hub_errors:  # noqa: N801 - used as a context manager, reads as a phrase
    """Turn huggingface_hub's multi-paragraph errors into one line naming the repo."""

    def __init__(self, repo: str) -> None:
        self.repo = repo

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        import httpx2
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        repo = self.repo
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, OfflineModeIsEnabled):
            msg = f"cannot pull {repo}: HF_HUB_OFFLINE is set (unset it to download)"
        elif isinstance(exc, GatedRepoError):
            msg = (f"{repo} is gated (HTTP {status}): accept its terms on its Hub page, then set HF_TOKEN "
                   "or run `hf auth login`")
        elif isinstance(exc, RevisionNotFoundError):
            msg = f"{repo} has no such revision (HTTP {status})"
        elif isinstance(exc, EntryNotFoundError):
            msg = f"{repo}: file not found (HTTP {status})"
        elif isinstance(exc, RepositoryNotFoundError):
            msg = (f"{repo} not found, or private/gated and no valid token was sent (HTTP {status}); "
                   "set HF_TOKEN if you have access")
        elif isinstance(exc, HfHubHTTPError):
            msg = f"{repo}: the Hub answered HTTP {status}"
        elif isinstance(exc, httpx2.TransportError):
            msg = f"cannot reach {hf_endpoint()} for {repo}: {type(exc).__name__}"
        else:
            return
        raise PullError(msg) from None
