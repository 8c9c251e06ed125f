"""Command palette entries: every action of the editor, findable by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, help, action) — actions are App actions, the same ones the keys run.
COMMANDS: list[tuple[str, str, str]] = [
    ("Save storyboard", "Merge edits into the file, keeping comments and key order", "save"),
    ("Undo", "Undo the last edit", "undo"),
    ("Redo", "Redo the last undone edit", "redo"),
    ("Add shot", "Insert a new shot after the selected one", "add_segment"),
    ("Duplicate shot", "Copy the selected shot, right after it", "duplicate_segment"),
    ("Delete shot", "Remove the selected shot", "delete_segment"),
    ("Move shot up", "Swap the selected shot with the one before it", "move_segment(-1)"),
    ("Move shot down", "Swap the selected shot with the one after it", "move_segment(1)"),
    ("Rename shot…", "Give the selected shot a new id, and its rendered files too if you like (n)",
     "rename_segment"),
    ("Takes…", "Render several seeds of the shot, watch each, pick the one the film continues from (t)",
     "pick_take"),
    ("Project settings…", "Frame rate, sizes, model preset, memory budgets, drift guard", "project_settings"),
    ("Randomise seed", "Give the selected shot a new random seed", "randomise_seed"),
    ("Render all", "Render every shot and the film (cached stages are skipped)", "render_all"),
    ("Render this shot", "Render only the selected shot", "render_segment"),
    ("Render from here", "Render the selected shot and every one after it", "render_from"),
    ("Cancel render", "Stop the running render job", "cancel_render"),
    ("Open output", "Open the selected shot's video (or the film, or its folder)", "open_output"),
    ("Reload from disk", "Take the version of the file on disk", "reload"),
    ("Merge with the file on disk", "Keep your edits and take another program's changes to everything "
     "you did not edit", "merge_disk"),
    ("Focus shot list", "Move the cursor to the list of shots", "focus('segments')"),
    ("Filter shots", "Show only the shots whose id or prompt holds some words (/)", "filter_shots"),
    ("Edit prompt", "Edit the selected shot's prompt", "edit_prompt"),
    ("Edit prompt in $EDITOR", "Open the selected shot's prompt in $VISUAL / $EDITOR (e)", "edit_prompt_outside"),
    ("Shots / render view", "Below 100 columns: switch between the shots and the live panels (f9)",
     "toggle_view"),
    ("Job log", "Show or hide every job's start, stages, fallbacks, warnings and output (ctrl+l)",
     "toggle_log"),
    ("Help", "Keys and what the screen shows", "help"),
    ("Quit", "Leave the editor (asks about unsaved changes)", "quit"),
]


class SulphurCommands(Provider):
    """Searches :data:`COMMANDS`; with no query, lists them all."""

    async def discover(self) -> Hits:
        for title, help_text, action in COMMANDS:
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in COMMANDS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.run_action, action), help=help_text)
