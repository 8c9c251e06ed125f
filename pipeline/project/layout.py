"""Every on-disk path of a project, in one module.

A project is the folder that holds storyboards. Beside them:

```
.sulphur/                   state: stage cache, the worker's journal, socket, lock and log
  cache/<stage>/<k[:2]>/<k>/  content-addressed stage outputs (pipeline.render.cache)
  cache.lock  uses/<storyboard>.json   renders hold it shared, a prune exclusively (pipeline.render.usage)
  journal.db  worker.sock  worker.lock  worker.log  tui-renders.json
renders/<stem>/             what a render of <stem>.toml publishes
  segments/<id>.mp4  previews/<id>.png  final.mp4  film.json  manifest.json
  takes/<id>/seed-<n>.mp4  takes/<id>/seed-<n>.png  takes/<id>/takes.json
```
Torch- and Textual-free: the TUI reads rendered files through it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.wire.framing import lock_path, socket_path

STATE = ".sulphur"
RENDERS = "renders"


def state_dir(project_dir: str | os.PathLike[str]) -> Path:
    """``.sulphur/``: the project's state (cache, journal, worker files)."""
    return Path(project_dir) / STATE


def cache_dir(project_dir: str | os.PathLike[str]) -> Path:
    return state_dir(project_dir) / "cache"


def cache_lock(project_dir: str | os.PathLike[str]) -> Path:
    """``flock``ed shared by every render of the project, exclusively by a prune."""
    return state_dir(project_dir) / "cache.lock"


def journal_db(project_dir: str | os.PathLike[str]) -> Path:
    return state_dir(project_dir) / "journal.db"


def worker_log(project_dir: str | os.PathLike[str]) -> Path:
    return state_dir(project_dir) / "worker.log"


def tui_renders(project_dir: str | os.PathLike[str]) -> Path:
    """What the editor remembers of renders it started (sulphur_tui.status)."""
    return state_dir(project_dir) / "tui-renders.json"


def folder_problem(storyboard_path: str | os.PathLike[str]) -> str:
    """What stands where a render keeps its folders (a file named ``.sulphur`` or
    ``renders/<stem>``), in one line, or "": found before any stage, not as "File exists"
    from inside the draft."""
    project = Path(storyboard_path).parent
    render_root = RenderFolder.of(storyboard_path).root
    for folder, holds in ((state_dir(project), "its cache and journal"), (cache_dir(project), "its cache"),
                          (render_root.parent, "the renders"), (render_root, "this storyboard's renders"),
                          (render_root / "segments", "the shots' videos")):
        if os.path.lexists(folder) and not folder.is_dir():
            return f"{folder}: is a file, not a folder (Sulphur keeps {holds} there; move it aside)"
    return ""


#: The worker's socket and lock (named by the wire layer, which finds the worker with them).
worker_socket = socket_path
worker_lock = lock_path


@dataclass(frozen=True)
class RenderFolder:
    """``renders/<stem>/`` of one storyboard: the files a render publishes."""

    root: Path

    @classmethod
    def of(cls, storyboard_path: str | os.PathLike[str]) -> RenderFolder:
        path = Path(storyboard_path)
        return cls(path.parent / RENDERS / path.stem)

    @property
    def storyboard_path(self) -> Path:
        """The storyboard these renders came from (``renders/<stem>/`` ← ``<stem>.toml``)."""
        return self.root.parent.parent / f"{self.root.name}.toml"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    def segment(self, segment_id: str) -> Path:
        """A finished segment's MP4."""
        return self.segments / f"{segment_id}.mp4"

    def preview(self, segment_id: str) -> Path:
        """The last frame of a segment's upscale, shown while it renders."""
        return self.root / "previews" / f"{segment_id}.png"

    @property
    def final(self) -> Path:
        return self.root / "final.mp4"

    @property
    def film_manifest(self) -> Path:
        """film.json: where each segment sits in final.mp4 and what the film was made from."""
        return self.root / "film.json"

    @property
    def manifest(self) -> Path:
        """manifest.json: what each segment MP4 was made from (rendered vs stale)."""
        return self.root / "manifest.json"

    def takes(self, segment_id: str) -> Path:
        return self.root / "takes" / segment_id

    def takes_manifest(self, segment_id: str) -> Path:
        return self.takes(segment_id) / "takes.json"

    def take(self, segment_id: str, seed: int) -> Path:
        """One take's MP4 (its last frame is beside it as ``.png``)."""
        return self.takes(segment_id) / f"seed-{seed}.mp4"
