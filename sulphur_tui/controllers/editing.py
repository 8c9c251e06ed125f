"""Edits of the storyboard the keys and the palette ask for: shots, takes, project
settings, undo/redo, save and reload. Each edit changes the :class:`Document` and posts
:class:`DocumentChanged`; the screen redraws from the document."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from textual.app import SuspendNotSupported
from textual.widgets import TextArea

from pipeline.project.files import describe_os_error
from pipeline.project.renaming import Move, planned_moves, rename_outputs, retarget_anchors
from pipeline.project.storyboard import StoryboardError
from sulphur_tui.document import NEW_PROMPT
from sulphur_tui.messages import DocumentChanged
from sulphur_tui.screens import ConfirmRenameFiles, ProjectEdit, ProjectScreen, RenameScreen
from sulphur_tui.screens.takes import Take, TakesScreen
from sulphur_tui.status import output_path, rename_flicker
from sulphur_tui.widgets.segments import SegmentList

if TYPE_CHECKING:
    from sulphur_tui.app import SulphurApp


class Editing:
    """The editing actions of the app, on its document."""

    def __init__(self, app: SulphurApp) -> None:
        self.app = app
        # Undo labels of renames that moved files ("rename beam to glow"): undoing or redoing
        # one offers to move the files along.
        self._moved_files: set[str] = set()

    def changed(self, select: str | None = None) -> None:
        self.app.post_message(DocumentChanged(select=select, reason="structure"))

    # ------------------------------------------------------------------ shots
    def add_segment(self) -> None:
        app = self.app
        if app.doc:
            self.changed(app.doc.add_segment(app.selected))

    def duplicate_segment(self) -> None:
        app = self.app
        if app.doc and app.selected:
            self.changed(app.doc.duplicate_segment(app.selected))

    def delete_segment(self) -> None:
        app = self.app
        if app.doc and app.selected:
            nxt = app.doc.delete_segment(app.selected)
            if nxt is None:
                app.notify("A storyboard needs at least one shot.", severity="warning")
                return
            app.notify(f"Deleted {app.selected} (ctrl+z brings it back)")
            self.changed(nxt)

    def move_segment(self, delta: int) -> None:
        app = self.app
        if app.doc and app.selected and app.doc.move_segment(app.selected, delta):
            self.changed(app.selected)

    def cursor_segment(self) -> str | None:
        """The shot under the list's cursor: keys typed in a burst (tmux, SSH) run an action
        before the list's Selected message for the last cursor move arrives."""
        app = self.app
        seglist = app.query_one(SegmentList)
        rows = seglist.ordered_rows
        row = seglist.cursor_row
        return str(rows[row].key.value) if 0 <= row < len(rows) else app.selected

    def rename_segment(self) -> None:
        """A new id for the selected shot; when it has rendered files, ask whether to rename them too."""
        app = self.app
        segment_id = self.cursor_segment()
        if app.doc is None or not segment_id:
            return

        def named(new_id: str | None) -> None:
            doc = app.doc
            if new_id is None or doc is None or segment_id not in {s.id for s in doc.storyboard.segments}:
                return
            moves = planned_moves(doc.storyboard.renders, segment_id, new_id)
            if not moves:
                self._rename(segment_id, new_id, files=False)
                return
            if app.live.running:
                app.notify("A job is running: only the id is renamed (its files may be being written).",
                           severity="warning", timeout=6)
                self._rename(segment_id, new_id, files=False)
                return
            root = doc.path.parent
            shown = [(str(m.source.relative_to(root)), str(m.target.relative_to(root))) for m in moves]
            note = "Saves the storyboard now, with your other unsaved edits." if doc.dirty else ""

            def answered(choice: str | None) -> None:
                if choice in ("files", "id"):
                    self._rename(segment_id, new_id, files=choice == "files")

            app.push_screen(ConfirmRenameFiles(segment_id, new_id, shown, note), answered)

        app.push_screen(RenameScreen(app.doc.storyboard, segment_id), named)

    def _rename(self, old: str, new: str, *, files: bool) -> None:
        """Rename in the document (one undo step), its files first when asked; save when the files moved."""
        app = self.app
        doc = app.doc
        assert doc is not None
        moved: list[Move] = []
        if files:
            try:
                moved = rename_outputs(doc.storyboard.renders, old, new)
            except OSError as exc:
                app.notify(str(exc), title="Not renamed", severity="error", timeout=10)
                return
        segs = tuple(replace(s, id=new) if s.id == old else s for s in doc.storyboard.segments)
        sb, pointed = retarget_anchors(replace(doc.storyboard, segments=segs), moved)
        try:
            doc.rename_segment(old, new, sb)
        except ValueError as exc:  # checked in the dialog; the document may have changed since
            app.notify(str(exc), title="Not renamed", severity="error")
            return
        if moved:
            self._moved_files.add(f"rename {old} to {new}")
        if old in app.baseline:
            app.baseline[new] = app.baseline.pop(old)
        if moved:
            self._flicker_follows(old, new)
        self.changed(new)
        also = f"; {', '.join(pointed)} now point at the new names" if pointed else ""
        if moved:
            saved = self.save()
            app.notify(f"{old} is now {new}: {len(moved)} file(s) renamed{also}"
                       + ("; ctrl+z undoes (and offers to move them back)" if saved
                          else "; the storyboard is NOT saved yet (ctrl+s)"),
                       title="Shot renamed", severity="information" if saved else "warning", timeout=8)
        else:
            app.notify(f"{old} is now {new}{also} (ctrl+s saves, ctrl+z undoes)", title="Shot renamed",
                       timeout=5)

    def randomise_seed(self) -> None:
        app = self.app
        if app.doc and app.selected:
            app.doc.randomise_seed(app.selected)
            self.changed(app.selected)

    def edit_prompt(self) -> None:
        """Focus the prompt, cursor at the end; a new shot's placeholder is selected so
        typing replaces it."""
        area = self.app.query_one("#prompt", TextArea)
        area.focus()
        if area.text == NEW_PROMPT:
            area.select_all()
        else:
            area.move_cursor(area.document.end)

    def edit_prompt_outside(self) -> None:
        """The selected shot's prompt in ``$VISUAL`` / ``$EDITOR`` (vi without either), the
        editor suspended meanwhile; what is saved there becomes one undoable edit."""
        app = self.app
        if app.doc is None or not app.selected:
            return
        seg = app.doc.storyboard.segment(app.selected)
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.TemporaryDirectory(prefix="sulphur-") as tmp:
            path = Path(tmp) / f"{seg.id}.prompt.txt"
            path.write_text(seg.prompt + "\n", encoding="utf-8")
            try:
                code = _run_editor(app, [*shlex.split(editor), str(path)])
            except OSError as exc:
                app.notify(f"{editor}: {exc}", title="No editor started", severity="error")
                return
            text = path.read_text(encoding="utf-8").strip()
        if code != 0 or not text:
            app.notify(f"{editor} exited with status {code}" if code else "An empty prompt is not taken.",
                       title="Prompt unchanged", severity="warning")
            return
        app.doc.break_coalescing()
        if app.doc.edit_segment(seg.id, prompt=text):
            self.changed(seg.id)

    # ------------------------------------------------------------------ takes
    def pick_take(self) -> None:
        """The takes of the selected shot: render more (through the worker), watch them, pick
        one; the picked one becomes its seed + locked prompt."""
        app = self.app
        if app.doc is None or not app.selected:
            return
        segment_id = self.cursor_segment()
        if segment_id is None:
            return

        def picked(take: Take | None) -> None:
            if take is not None:
                self.use_take(segment_id, take)

        app.push_screen(TakesScreen(app.doc.storyboard, segment_id, app.image_cls, app.live), picked)

    def use_take(self, segment_id: str, take: Take) -> None:
        app = self.app
        doc = app.doc
        if doc is None or segment_id not in {s.id for s in doc.storyboard.segments}:
            return
        # Saving would also write the user's other unsaved edits: only do that when asked.
        others_unsaved = doc.dirty
        doc.break_coalescing()
        if not doc.edit_segment(segment_id, seed=take.seed, enhanced_prompt=take.prompt, enhance_lock=True):
            app.notify(f"{segment_id} already uses take {take.seed}.", timeout=3)
            return
        self.changed(segment_id)
        if others_unsaved:
            app.notify(f"{segment_id} uses take {take.seed} once saved (ctrl+s, with your other edits); "
                       "the next render continues from it.", title="Take picked")
        elif self.save():
            app.notify(f"{segment_id} now uses take {take.seed}: the next render continues from it.",
                       title="Take picked")
        else:
            app.notify(f"{segment_id} uses take {take.seed} in the editor, not yet on disk.",
                       title="Take picked", severity="warning")

    # ------------------------------------------------------------------ project
    def project_settings(self) -> None:
        """The ``[project]`` form; what it returns is one undoable edit."""
        app = self.app
        if app.doc is None:
            return

        def applied(edit: ProjectEdit | None) -> None:
            doc = app.doc
            if edit is None or doc is None:
                return
            doc.break_coalescing()
            changed = doc.apply(replace(doc.storyboard, project=edit.project), "edit project settings")
            if changed:
                self.changed()
            if edit.save:
                self.save()
            elif changed:
                app.notify("Every shot renders again with the new settings once saved (ctrl+s); "
                           "ctrl+z undoes.", title="Project settings changed", timeout=4)

        app.push_screen(ProjectScreen(app.doc.storyboard.project), applied)

    # ------------------------------------------------------------------ history and file
    def undo(self) -> None:
        app = self.app
        if app.doc is None:
            return
        label = app.doc.undo()
        if label is None:
            app.notify("Nothing to undo.", timeout=2)
        else:
            self.changed(_renamed(label, undone=True))
            self._files_follow(label, undone=True)

    def redo(self) -> None:
        app = self.app
        if app.doc is None:
            return
        label = app.doc.redo()
        if label is None:
            app.notify("Nothing to redo.", timeout=2)
        else:
            self.changed(_renamed(label, undone=False))
            self._files_follow(label, undone=False)

    def _flicker_follows(self, old: str, new: str) -> None:
        """The measured flicker goes with the files it measured, in the panel and in the notes."""
        app = self.app
        assert app.doc is not None
        if old in app.live.flicker:
            app.live.flicker[new] = msgspec.structs.replace(app.live.flicker.pop(old), segment=new)
        if old in app.live.seams:
            app.live.seams[new] = app.live.seams.pop(old)
        rename_flicker(app.doc.saved, old, new)
        app.board.refresh_live({"flicker"})

    def _files_follow(self, label: str, *, undone: bool) -> None:
        """An undone (or redone) rename whose files were moved: offer to move them back (again)."""
        app = self.app
        doc = app.doc
        if doc is None or label not in self._moved_files:
            return
        _, old, _, new = label.split(" ")  # ids hold no spaces
        source, target = (new, old) if undone else (old, new)
        moves = planned_moves(doc.storyboard.renders, source, target)
        if not moves or app.live.running:
            return
        root = doc.path.parent
        shown = [(str(m.source.relative_to(root)), str(m.target.relative_to(root))) for m in moves]

        def answered(choice: str | None) -> None:
            if choice != "files" or app.doc is None:
                return
            try:
                rename_outputs(app.doc.storyboard.renders, source, target)
            except OSError as exc:
                app.notify(str(exc), title="Files not renamed", severity="error", timeout=10)
                return
            if source in app.baseline:
                app.baseline[target] = app.baseline.pop(source)
            self._flicker_follows(source, target)
            if self.save():
                app.notify(f"{len(moves)} file(s) of {target} renamed back" if undone else
                           f"{len(moves)} file(s) of {target} renamed", title="Files renamed", timeout=5)

        note = "ctrl+z restored the id." if undone else "ctrl+y renamed it again."
        app.push_screen(ConfirmRenameFiles(source, target, shown, note), answered)

    def save(self) -> bool:
        app = self.app
        doc = app.doc
        if doc is None or not self.fields_good():
            return False
        if doc.disk_changed():
            app.disk.poll()  # ask first: never overwrite someone else's change silently
            if app.disk.asking or doc.disk_changed():
                return False
            # only the worker's enhanced prompts had changed, and they were taken in: save on
        try:
            doc.save(over_broken=app.disk.over_broken)
        except StoryboardError as exc:
            app.notify(str(exc), title="Not saved", severity="error", timeout=10)
            return False
        except OSError as exc:  # the path and the reason, not "[Errno 13] ..."
            app.notify(describe_os_error(exc.filename or doc.path, exc), title="Not saved", severity="error",
                       timeout=10)
            return False
        app.disk.over_broken = False
        app.board.refresh_document()
        app.notify(f"Saved {doc.path.name}", timeout=2)
        return True

    def fields_good(self) -> bool:
        """False (and says why) while a shot field's text is not a value: the document holds
        the field's last good value, which the form no longer shows."""
        problem = self.app.board.field_problem
        if problem:
            self.app.notify(f"{problem}. Fix the field, or undo (ctrl+z), first.", title="Not saved",
                            severity="error", timeout=8)
        return not problem

    def reload(self) -> None:
        app = self.app
        if app.doc is None:
            return
        try:
            app.doc.reload()
        except StoryboardError as exc:
            app.notify(str(exc), title="Reload failed", severity="error")
            return
        app.board.refresh_document(editor=True)

    def open_output(self) -> None:
        app = self.app
        if app.doc is None:
            return
        target = output_path(app.doc.storyboard, app.selected)
        opener = desktop_opener()
        if opener is None or not target.exists():
            app.notify(str(target), title="Output" if target.exists() else "Not rendered yet — output goes to",
                       timeout=10)
            return
        subprocess.Popen([opener, str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        app.notify(f"Opening {target.name}", timeout=3)


def _run_editor(app: SulphurApp, command: list[str]) -> int:
    """Run the editor in the terminal (the app steps aside); headless (tests, ``--serve``)
    there is no terminal to lend, so it just runs."""
    try:
        with app.suspend():
            return subprocess.run(command).returncode
    except SuspendNotSupported:
        return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True).returncode


def desktop_opener() -> str | None:
    """xdg-open / open where a desktop can show the file; None over plain SSH."""
    if sys.platform == "darwin":
        return shutil.which("open")
    if os.environ.get("SSH_CONNECTION") and not os.environ.get("DISPLAY"):
        return None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    return shutil.which("xdg-open")


def _renamed(label: str, *, undone: bool) -> str | None:
    """The id a shot has after undoing (or redoing) the edit ``label``, when that edit was a rename
    ("rename beam to glow"): the list keeps that shot selected instead of jumping to the first."""
    parts = label.split(" ")  # ids hold no spaces
    if len(parts) == 4 and parts[0] == "rename" and parts[2] == "to":
        return parts[1] if undone else parts[3]
    return None

