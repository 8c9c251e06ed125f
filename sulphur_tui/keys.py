"""The editor's app-wide keys, in one place: each with a description and an id (so users
can rebind them), the ones that must work from every field as priority bindings. The
shot list's own keys live on :class:`~sulphur_tui.widgets.segments.SegmentList`."""

from __future__ import annotations

from textual.binding import Binding

APP_BINDINGS: list[Binding] = [
    Binding("ctrl+s", "save", "Save", id="save"),
    # ^z / ^y are what every editor uses: listed in F1 help, kept out of the footer so the
    # render keys fit 120 columns.
    Binding("ctrl+z", "undo", "Undo", id="undo", priority=True, show=False),
    Binding("ctrl+y", "redo", "Redo", id="redo", priority=True, show=False),
    # Priority: the render keys work from every field (the prompt's text area binds F6/F7).
    Binding("f5", "render_all", "Render", id="render.all", tooltip="Render every shot that changed",
            priority=True),
    Binding("f6", "render_segment", "Render shot", id="render.segment", priority=True),
    Binding("f7", "render_from", "Render from", id="render.from", tooltip="Render this shot and every later one",
            priority=True),
    Binding("f8", "cancel_render", "Cancel", id="render.cancel", priority=True),
    Binding("ctrl+n", "add_segment", "Add shot", id="segment.add_anywhere", show=False),
    Binding("ctrl+r", "randomise_seed", "Randomise seed", id="segment.randomise", show=False),
    Binding("f2", "focus('segments')", "Shots", id="focus.segments", show=False),
    Binding("f3", "edit_prompt", "Prompt", id="focus.prompt", show=False),
    # Out of the footer (full at 120 columns): named on the Shots panel, in F1 help, the palette.
    Binding("f4", "project_settings", "Project settings", id="project.settings", show=False,
            tooltip="Frame rate, sizes, model preset, memory budgets, drift guard"),
    Binding("f9", "toggle_view", "Shots/Render", id="view.toggle", show=False,
            tooltip="Below 100 columns: switch between the shots and the live render panels"),
    Binding("ctrl+l", "toggle_log", "Job log", id="view.log", show=False,
            tooltip="Every job's start, stages, fallbacks, warnings and output"),
    Binding("f1", "help", "Help", id="help"),
    Binding("question_mark", "help", "Help", id="help.question", show=False),
    # Textual's quit key, in F1 help and the palette; out of the footer so F1 fits 120
    # columns. Not a priority binding, so a screen's own visible ctrl+q (the broken-file
    # screen) shows in its footer; no widget here binds ctrl+q, so it always reaches us.
    Binding("ctrl+q", "quit", "Quit", id="quit", show=False),
    # Plain q too (it asks when there are unsaved edits); text fields type it instead.
    Binding("q", "quit", "Quit", id="quit.q", show=False),
]
