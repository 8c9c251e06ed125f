"""The editor on a path that is no storyboard file: a FIFO, a folder, a device, a huge file.

`sulphur edit fifo.toml` used to wait forever for a writer before its first frame, a
symlink to /dev/zero read until memory ran out, a folder was a traceback; and a file
swapped for a FIFO while it was open froze the editor at its next poll. Each must show
the broken-file view (or the disk-changed question) in words, without opening the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.project.storyboard import load
from sulphur_tui.app import SulphurApp, create_app
from sulphur_tui.screens import BrokenFileScreen, DiskChangedDialog
from tests.special_files import make_special

from .conftest import screen_once, screen_text

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]
SIZE = (100, 30)


def _special(story: Path, kind: str) -> Path:
    """``story``'s path made into ``kind`` (the good storyboard removed first)."""
    story.unlink()
    return make_special(story, kind)


WORDS = {"fifo": "FIFO (named pipe)", "directory": "is a directory", "devzero": "character device",
         "oversized": "larger than 16 MiB"}


@pytest.mark.parametrize("kind", list(WORDS))
async def test_a_special_file_opens_the_broken_view_unread(kind: str, story: Path) -> None:
    path = _special(story, kind)
    app = create_app(path, connect_worker=False, image="none", poll_disk=0.05)  # hung here on a FIFO
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)  # a few polls of the broken view: each must refuse, not read
        assert isinstance(app.screen, BrokenFileScreen)
        assert app.doc is None and WORDS[kind] in screen_text(app)


async def test_a_file_swapped_for_a_fifo_while_open_is_asked_about(story: Path) -> None:
    app: SulphurApp = create_app(story, connect_worker=False, image="none", poll_disk=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")  # an unsaved edit: a new shot
        assert app.doc is not None and app.doc.dirty
        _special(story, "fifo")
        for _ in range(400):  # the poll runs on the event loop: a blocking read froze the editor here
            await pilot.pause(0.05)
            if isinstance(app.screen, DiskChangedDialog):
                break
        assert isinstance(app.screen, DiskChangedDialog)
        shown = await screen_once(pilot, "FIFO")
        assert "is a FIFO" in shown and "(named pipe)" in shown, shown  # wrapped where the path ends
        await pilot.press("k")  # keep mine, then save: the user's version replaces the FIFO
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert story.is_file() and len(load(story).segments) == 4


async def test_a_storyboard_still_opens_and_saves(story: Path) -> None:
    """The guarded reads keep the ordinary path: open, edit, save, read back."""
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a", "ctrl+s")
        await pilot.pause()
    assert len(load(story).segments) == 4


def _notes(app: SulphurApp) -> list[tuple[str, str]]:
    """The toasts on screen now: (title, message)."""
    return [(n.title, n.message) for n in app._notifications]


async def test_a_render_whose_worker_cannot_start_says_so(story: Path) -> None:
    """F5 where no worker can start (``.sulphur`` is a file here; a read-only folder is the same):
    the status line stayed on "starting the render worker…" for good, under a "Background task
    failed" toast. Now the status and a toast say the render did not start, and why."""
    (story.parent / ".sulphur").write_text("not a folder")
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("f5")
        for _ in range(400):
            await pilot.pause(0.05)
            if "render not started" in app.worker_detail:
                break
        assert app.worker_detail.startswith("render not started: ") and ".sulphur" in app.worker_detail
        ((title, message),) = _notes(app)
        assert title == "Render not started" and "Not a directory" in message and "Errno" not in message


async def test_saving_a_read_only_storyboard_says_why_in_words(story: Path) -> None:
    story.chmod(0o444)
    before = story.read_bytes()
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("a", "ctrl+s")
        await pilot.pause()
        assert _notes(app) == [("Not saved", f"{story}: the file is read-only")]  # was "[Errno 13] …"
    assert story.read_bytes() == before


async def test_a_loop_of_symlinks_opens_the_broken_view(tmp_path: Path) -> None:
    """``sulphur edit loop.toml`` (a link to itself) was a RuntimeError traceback from resolve()."""
    loop = tmp_path / "loop.toml"
    loop.symlink_to("loop.toml")
    app = create_app(loop, connect_worker=False, image="none", poll_disk=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert isinstance(app.screen, BrokenFileScreen)
        assert "Too many levels of symbolic links" in screen_text(app)

