"""What each storyboard's cache entries are, and pruning what none uses any more.

The stage cache is content-addressed and grows forever (a 3-shot tiny film used 331 MB):
every edit leaves the old entries behind. A render records the entries it found or
built in ``.sulphur/uses/<storyboard>.json`` (a failed render adds to the last record
instead of replacing it, so nothing a finished film needs is forgotten). Then:

- :func:`report` — size per storyboard (entries shared by two count for both), and the
  size of entries no existing storyboard's record names;
- :func:`prune` — removes those unreferenced entries (``sulphur cache --prune``), and,
  with a size cap (``[project] cache_limit_gb``), also the least recently used
  entries that no storyboard references until the cache fits.

Torch-free: ``sulphur cache`` imports only this and the storyboard model.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.project.files import describe_os_error
from pipeline.project.layout import cache_lock
from pipeline.project.storyboard import Storyboard, atomic_write
from pipeline.wire import protocol
from pipeline.wire.framing import lock_pid

if TYPE_CHECKING:
    from pipeline.render.outputs import OutputLock


def uses_dir(project_dir: Path) -> Path:
    return Path(project_dir) / ".sulphur" / "uses"


def record(storyboard: Path, used: set[str], *, complete: bool) -> None:
    """Remember the entries a render of ``storyboard`` used (replace when ``complete``, else add)."""
    folder = uses_dir(storyboard.parent)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{storyboard.name}.json"
    entries = set(used)
    if not complete:
        entries |= set(_read(path))
    atomic_write(path, json.dumps({"storyboard": storyboard.name, "entries": sorted(entries)}, indent=1))


def _read(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
        return [e for e in data.get("entries", []) if isinstance(e, str)]
    except (OSError, ValueError, AttributeError):
        return []


def entries(cache_root: Path) -> dict[str, tuple[Path, int, float]]:
    """Every complete entry: "stage/key" → (folder, bytes, last modified)."""
    out: dict[str, tuple[Path, int, float]] = {}
    if not cache_root.is_dir():
        return out
    for meta in cache_root.glob("*/*/*/meta.json"):
        folder = meta.parent
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        out[f"{folder.parent.parent.name}/{folder.name}"] = (folder, size, meta.stat().st_mtime)
    return out


@dataclass
class Report:
    total: int = 0
    per_storyboard: dict[str, int] = field(default_factory=dict)
    unreferenced: list[str] = field(default_factory=list)
    unreferenced_bytes: int = 0


def report(project_dir: Path) -> Report:
    """Sizes per storyboard that still exists, and the entries none of them uses."""
    project_dir = Path(project_dir)
    all_entries = entries(project_dir / ".sulphur" / "cache")
    rep = Report(total=sum(size for _, size, _ in all_entries.values()))
    referenced: set[str] = set()
    folder = uses_dir(project_dir)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        name = path.name.removesuffix(".json")
        if not (project_dir / name).is_file():
            continue  # the storyboard is gone: its entries are unreferenced now
        used = set(_read(path)) & set(all_entries)
        referenced |= used
        rep.per_storyboard[name] = sum(all_entries[e][1] for e in used)
    rep.unreferenced = sorted(set(all_entries) - referenced)
    rep.unreferenced_bytes = sum(all_entries[e][1] for e in rep.unreferenced)
    return rep


class CacheInUse(RuntimeError):
    """A render of the project is running: the entries it builds or reuses are in no record
    until it ends, so pruning now would delete them under it (it failed reading its own refine)."""


def rendering_now(project_dir: Path, own: Path | None = None) -> list[str]:
    """"renders/<stem> (PID n)" for every render folder of the project whose ``.lock`` a render
    holds now (an ``OutputLock``: a flock, dropped by the kernel when its process ends).
    ``own``: the lock this process holds (a render pruning after itself)."""
    busy = []
    for lock in sorted((Path(project_dir) / "renders").glob("*/.lock")):
        if own is not None and lock.resolve() == Path(own).resolve():
            continue
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_pid(fd)
            busy.append(f"renders/{lock.parent.name}" + (f" (PID {holder})" if holder and holder > 0 else ""))
        except OSError:
            pass  # not a lock file we made (a FIFO, ...): no render holds it
        finally:
            os.close(fd)
    return busy


def prune(project_dir: Path, limit_bytes: int | None = None, *, own_lock: Path | None = None) -> tuple[int, int]:
    """Remove unreferenced entries (oldest first; with ``limit_bytes`` only until the cache
    fits). Returns (entries removed, bytes freed). Raises :class:`CacheInUse` while another
    render of the project runs (``own_lock``: the caller's own render lock, not another's)."""
    project_dir = Path(project_dir)
    busy = rendering_now(project_dir, own_lock)
    if busy:
        raise CacheInUse(f"{', '.join(busy)} is rendering: prune once it has finished")
    with _exclusive_cache(project_dir):
        return _prune_unreferenced(project_dir, limit_bytes)


def open_cache_lock(project_dir: Path) -> int | None:
    """A descriptor of the project's cache lock (made if need be), or None where there is
    none to take: no state folder, a read-only one, or a link planted there (never followed).
    Renders take it shared (pipeline.render.outputs.OutputLock), a prune exclusively."""
    try:
        return os.open(cache_lock(project_dir), os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
                       | os.O_CLOEXEC, 0o600)
    except OSError:
        return None


@contextmanager
def _exclusive_cache(project_dir: Path) -> Iterator[None]:
    """The project's cache lock, exclusively, for the length of a prune: a render holds it
    shared from its start, so one that started after :func:`rendering_now` looked is seen
    here, and one that starts now waits until the prune is done."""
    fd = open_cache_lock(project_dir)
    if fd is None:
        yield  # nothing cached, or nothing to lock: rendering_now looked
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheInUse("a render of this project is running: prune once it has finished") from None
        except OSError:
            pass  # not a lock file we made (a FIFO, ...): rendering_now already looked
        yield
    finally:
        os.close(fd)


def _prune_unreferenced(project_dir: Path, limit_bytes: int | None) -> tuple[int, int]:
    all_entries = entries(project_dir / ".sulphur" / "cache")
    rep = report(project_dir)
    total = rep.total
    removed = freed = 0
    for key in sorted(rep.unreferenced, key=lambda e: all_entries[e][2]):
        if limit_bytes is not None and total <= limit_bytes:
            break
        folder, size, _ = all_entries[key]
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.prune.partial")
        try:
            os.replace(folder, aside)  # a reader sees the entry whole or not at all
        except OSError:
            continue
        shutil.rmtree(aside, ignore_errors=True)
        removed, freed, total = removed + 1, freed + size, total - size
    return removed, freed


def after_render(sb: Storyboard, used: set[str], complete: bool, emit: Callable[[protocol.Event], None],
                 own_lock: OutputLock) -> None:
    """Record what a render used (``sulphur cache``; a failed or partial one adds to the last
    record), then, after a whole-film render, hold the cache to ``[project] cache_limit_gb`` by pruning
    entries no storyboard uses — not while another render of the project runs (its entries are
    in no record yet). Never fails a render, nor hides why one failed."""

    def tell(event: protocol.Event) -> None:
        try:
            emit(event)
        except OSError:  # a closed stdout (BrokenPipeError): the record matters more than the line
            pass

    try:
        record(sb.real_path, used, complete=complete)
        own_lock.release_cache()  # recorded: this render's entries are safe from the prune
        if complete and sb.project.cache_limit_gb is not None:
            removed, freed = prune(sb.folder, int(sb.project.cache_limit_gb * 2**30), own_lock=own_lock.path)
            if removed:
                tell(protocol.Log(message=f"cache over {sb.project.cache_limit_gb:g} GiB: removed {removed} "
                                          f"unused entries ({human(freed)})"))
    except CacheInUse as exc:
        tell(protocol.Log(message=f"cache over {sb.project.cache_limit_gb:g} GiB, not pruned: {exc}"))
    except OSError as exc:  # the reason in words, not "[Errno 20] …"
        tell(protocol.Log(level="warning",
                          message=f"cache bookkeeping skipped: {describe_os_error(exc.filename, exc)}"))


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


__all__ = ["Report", "after_render", "open_cache_lock", "entries", "human", "prune", "record", "report", "uses_dir"]
