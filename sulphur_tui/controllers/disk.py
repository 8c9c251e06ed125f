"""The storyboard file and the render folder as they change under the editor.

Someone else's edit of the file is asked about (never overwritten silently); prompts
the worker enhanced are taken quietly unless they clash with an unsaved edit; a file
that does not load is watched until it does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from pipeline.project.storyboard import Storyboard, StoryboardError
from sulphur_tui.document import Document, only_enhanced_prompts_differ
from sulphur_tui.screens import BrokenFileScreen, DiskChangedDialog
from sulphur_tui.status import disk_states

if TYPE_CHECKING:
    from sulphur_tui.app import SulphurApp


class DiskWatcher:
    """Polled by the app's timers; asks the user through dialogs."""

    def __init__(self, app: SulphurApp) -> None:
        self.app = app
        self.asking = False  # a DiskChangedDialog is open
        # what to do once the dialog is answered (save and quit waits on it), then forgotten
        self.then: Callable[[], None] | None = None
        self.over_broken = False  # the user kept their version over a file that does not load

    def poll_renders(self) -> None:
        app = self.app
        if app.doc is not None:
            fresh = disk_states(app.doc.storyboard, app.baseline)
            if fresh != app.renders:
                app.renders = fresh
                app.board.refresh_live({"segments"})

    def poll(self) -> None:
        """The file changed on disk: take the worker's enhanced prompts, or ask."""
        app = self.app
        doc = app.doc
        if doc is None or self.asking or not doc.disk_changed():
            return
        try:
            fresh = doc.read_disk()
            problem = ""
        except (StoryboardError, OSError) as exc:
            fresh, problem = None, str(exc)
        if fresh is not None and only_enhanced_prompts_differ(doc.saved, fresh):
            # The worker wrote enhanced prompts: take them unless the user edited the
            # same field since the last save (then it is a real conflict: ask).
            mine = {s.id: s for s in doc.storyboard.segments}
            clash = [s.id for s, old in zip(fresh.segments, doc.saved.segments, strict=True)
                     if s.enhanced_prompt != old.enhanced_prompt and s.id in mine
                     and mine[s.id].enhanced_prompt != old.enhanced_prompt]
            if not clash:
                self._adopt_enhanced(fresh)
                return
        self.asking = True
        app.push_screen(DiskChangedDialog(doc.path, doc.dirty, problem), self._answer)

    def _adopt_enhanced(self, fresh: Storyboard) -> None:
        doc = self.app.doc
        assert doc is not None
        # Only the prompts the worker rewrote: the others may carry the user's unsaved edits.
        new = {s.id: s.enhanced_prompt for s, old in zip(fresh.segments, doc.saved.segments, strict=True)
               if s.enhanced_prompt != old.enhanced_prompt}
        if not doc.dirty:
            doc.adopt_external(fresh)
        else:
            segs = tuple(replace(s, enhanced_prompt=new.get(s.id, s.enhanced_prompt)) for s in doc.storyboard.segments)
            mine = replace(doc.storyboard, segments=segs)
            doc.adopt_external(fresh)
            doc.storyboard = mine  # still dirty with the user's own edits, now on top of the new prompts
        self.app.board.refresh_document(editor=True)

    def _answer(self, answer: str | None) -> None:
        then, self.then = self.then, None
        self._take(answer)
        if then is not None and answer in ("merge", "keep"):  # after a reload the edits are an undo away:
            then()  # quitting then would lose them, so the editor stays open

    def _take(self, answer: str | None) -> None:
        self.asking = False
        app = self.app
        doc = app.doc
        if doc is None:
            return
        if answer == "reload":
            had_edits = doc.dirty  # reload makes them an undo step; without them there is nothing to undo
            try:
                doc.reload()
            except StoryboardError as exc:
                app.notify(str(exc), title="Reload failed", severity="error")
                return
            self.over_broken = False
            app.board.refresh_document(editor=True)
            app.notify("Reloaded from disk" + (" (your edits are one undo away)" if had_edits else ""))
        elif answer == "merge":
            self.merge()
        else:
            try:
                doc.read_disk()
                self.over_broken = False
            except (StoryboardError, OSError):
                self.over_broken = True
            doc.keep_mine()
            app.board.refresh_document()
            app.notify("Kept your version; saving will replace the file on disk.")

    def merge(self) -> None:
        """Merge the file on disk into the document (the dialog's answer, or the palette's)."""
        app, doc = self.app, self.app.doc
        if doc is None:
            return
        if not doc.disk_changed():
            app.notify("The file on disk has not changed since it was read or saved: nothing to merge.")
            return
        try:
            merge = doc.merge_disk()
        except (StoryboardError, OSError) as exc:
            app.notify(str(exc), title="Merge failed", severity="error")
            return
        self.over_broken = False
        app.board.refresh_document(editor=True)
        took = f"took the file's changes to {_listed(merge.taken)}" if merge.taken else "the file had nothing new"
        kept = f"; kept yours where both changed {_listed(merge.both_changed)}" if merge.both_changed else ""
        app.notify(f"Merged: {took}{kept}. Save to write it (undo goes back).", timeout=10)

    def poll_broken(self) -> None:
        """The broken-file view: open the editor as soon as the file loads."""
        app = self.app
        if app.doc is not None:
            return
        try:
            app.doc = Document(app.path)
        except StoryboardError as exc:
            if str(exc) != str(app.load_error):
                app.load_error = exc
                if isinstance(app.screen, BrokenFileScreen):
                    app.screen.show(exc)
            return
        app.load_error = None
        if isinstance(app.screen, BrokenFileScreen):
            app.pop_screen()
        app.refresh_bindings()
        app.start_document()
        app.notify(f"{app.path.name} loads now.")


def _listed(names: tuple[str, ...], most: int = 4) -> str:
    """``a, b, c and 2 more``: a notification stays a few lines long."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
