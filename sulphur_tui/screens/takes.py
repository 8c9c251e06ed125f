"""The takes of one shot: render more through the worker, watch each one, pick one.

Takes are several seeds of a shot, recorded in ``renders/<stem>/takes/<id>/takes.json``
(by the worker's takes job, or by ``sulphur takes FILE SHOT --seeds N``)::

    {"segment": "<id>", "takes": {"<seed>": {"path": "…/seed-<seed>.mp4", "prompt": "…"}}}

This screen lists them with the rows of the shot's running takes job (seed, stage,
progress, then its clip and last frame), starts a new job with ``r`` (the app submits it:
:class:`TakesScreen.Render`), and dismisses with the take the user picks; the app then
puts its seed and its prompt (locked) into the open document, which is what ``--pick``
does to the file, so unsaved edits, undo and the changed-on-disk check work as for any
other edit. The manifest is read here rather than through :mod:`pipeline.render.takes`:
the editor imports only the protocol and storyboard modules of the pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from pipeline.project.storyboard import Storyboard
from pipeline.wire.protocol import MAX_TAKES
from sulphur_tui.live import LiveState, TakeLive, TakesLive
from sulphur_tui.widgets.preview import PreviewPane
from sulphur_tui.widgets.segments import first_words

#: Takes a new job renders unless the user asks for another number.
DEFAULT_TAKES = 4


@dataclass(frozen=True)
class Take:
    """One rendered take of a shot."""

    seed: int
    path: Path  # its MP4
    prompt: str  # the enhanced prompt it was drafted from; locked when it is picked
    still: Path | None  # a PNG of its last frame beside the clip, if there is one


def takes_manifest(sb: Storyboard, segment_id: str) -> Path:
    return sb.renders.takes_manifest(segment_id)


def read_takes(sb: Storyboard, segment_id: str) -> list[Take]:
    """The recorded takes of a shot by seed; [] when none were rendered.

    Raises OSError for an unreadable manifest and ValueError for one that is not the
    format above. Decoding the MP4 for a frame would need PyAV in the editor's process,
    so only a ready-made PNG beside the clip is shown.
    """
    manifest = takes_manifest(sb, segment_id)
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    entries = data.get("takes") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{manifest}: expected a 'takes' table of seed → {{path, prompt}}")
    takes = []
    for key, entry in entries.items():
        try:
            seed, recorded, prompt = int(key), Path(entry["path"]), str(entry.get("prompt", ""))
        except (TypeError, ValueError, KeyError, AttributeError):
            raise ValueError(f"{manifest}: take {key!r} is not a seed with a path and a prompt") from None
        # A relative path is relative to wherever `sulphur takes` ran; the clips always
        # sit beside the manifest.
        clip = recorded if recorded.is_absolute() else manifest.parent / recorded.name
        still = clip.with_suffix(".png")
        takes.append(Take(seed, clip, prompt, still if still.is_file() else None))
    return sorted(takes, key=lambda t: t.seed)


def segment_seed(sb: Storyboard, segment_id: str) -> int:
    """The seed a render of the shot uses: its own, else the project's plus its position."""
    seg = sb.segment(segment_id)
    return seg.seed if seg.seed is not None else sb.project.seed + sb.index(segment_id)


def next_seeds(first: int, taken: set[int], count: int) -> list[int]:
    """``count`` seeds from the shot's own one up, skipping those already taken: the first job
    renders the shot's seed first (what a render makes), a second one continues past the first."""
    seeds, seed = [], first
    while len(seeds) < count:
        if seed not in taken:
            seeds.append(seed)
        seed += 1
    return seeds


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _bar(fraction: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "▓" * filled + "░" * (width - filled)


def _live_state(take: TakeLive) -> tuple[str, str]:
    """The status cell of a take of the running job, and its style."""
    if take.state == "rendering":
        steps = f" {take.step}/{take.total}" if take.total else ""
        return f"▶ {take.stage or 'starting'}{steps} {_bar(take.progress)} {take.progress:4.0%}", "bold"
    return {"queued": ("◷ queued", "dim"), "done": ("✔ rendered", "green"), "failed": ("✖ failed", "bold red"),
            "cancelled": ("– not rendered", "dim")}.get(take.state, (take.state, ""))


class TakesScreen(ModalScreen[Take | None]):
    """The takes of the selected shot; dismisses with the picked :class:`Take` or None."""

    DEFAULT_CSS = """
    TakesScreen { align: center middle; }
    TakesScreen > Vertical {
        width: 110; max-width: 100%; height: auto; max-height: 95%;
        border: thick $primary; background: $panel; padding: 1 2;
    }
    TakesScreen .question { text-style: bold; margin-bottom: 1; }
    TakesScreen .detail { color: $text-muted; margin-bottom: 1; }
    TakesScreen .command { color: $text-muted; margin-bottom: 1; }
    TakesScreen #takes { height: auto; max-height: 10; margin-bottom: 1; }
    TakesScreen #take-detail { height: auto; }
    TakesScreen #take-text { width: 1fr; height: auto; }
    TakesScreen #take-prompt { margin-bottom: 1; }
    TakesScreen #take-clip { color: $text-muted; }
    TakesScreen #take-preview { width: 40; height: auto; min-height: 0; margin-left: 2; }
    TakesScreen #take-preview > #preview-empty { height: 1; }
    TakesScreen #buttons { height: auto; margin-top: 1; }
    TakesScreen #buttons > Label { padding: 1 1 0 0; }
    TakesScreen #take-count { width: 8; }
    TakesScreen #take-count-error { color: $error; padding: 1 0 0 1; width: 1fr; }
    TakesScreen Button { margin-left: 1; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="takes.close"),
        Binding("r", "render_takes", "Render takes", id="takes.render",
                tooltip="Render more seeds of this shot through the worker"),
    ]

    @dataclass
    class Render(Message):
        """The user asked for these seeds of the shot as a takes job (the app submits it)."""

        segment: str
        seeds: list[int]

    def __init__(self, sb: Storyboard, segment_id: str, image_cls: type[Widget] | None,
                 live: LiveState | None = None) -> None:
        super().__init__()
        self.sb, self.segment_id, self.image_cls = sb, segment_id, image_cls
        self.live = live or LiveState()
        self.root = sb.path.parent
        self.current = segment_seed(sb, segment_id)
        self.takes: list[Take] = []
        self.problem = ""
        self._read()
        self.seeds: list[int] = self._seeds()

    # ------------------------------------------------------------------ data
    def _read(self) -> None:
        try:
            self.takes, self.problem = read_takes(self.sb, self.segment_id), ""
        except (OSError, ValueError) as exc:
            self.takes, self.problem = [], str(exc)

    @property
    def job(self) -> TakesLive | None:
        """The shot's latest takes job as the worker reports it."""
        return self.live.takes.get(self.segment_id)

    def _seeds(self) -> list[int]:
        """Every row: recorded takes and the seeds of the latest job, by seed."""
        job = self.job
        return sorted({t.seed for t in self.takes} | set(job.takes if job else ()))

    def _take(self, seed: int) -> Take | None:
        return next((t for t in self.takes if t.seed == seed), None)

    # ------------------------------------------------------------------ drawing
    def compose(self) -> ComposeResult:
        sid = self.segment_id
        with Vertical():
            yield Label("", id="takes-title", classes="question")
            yield Static("", id="takes-problem", classes="detail")
            yield Static(f"Render several seeds of this shot, then pick the one the film continues from.\n"
                         f"(In a shell: sulphur takes {self.sb.path.name} {sid} --seeds 4)",
                         id="takes-empty", classes="command")
            yield OptionList(id="takes")
            with Horizontal(id="take-detail"):
                with Vertical(id="take-text"):
                    yield Static("", id="take-prompt")
                    yield Static("", id="take-clip")
                if self.image_cls is not None:
                    yield PreviewPane(self.image_cls, id="take-preview")
            with Horizontal(id="buttons"):
                yield Label("Takes:")
                yield Input(str(DEFAULT_TAKES), id="take-count", type="integer", max_length=2,
                            tooltip=f"How many seeds to render (1–{MAX_TAKES})")
                yield Button("Render (r)", id="render-takes")
                yield Static("", id="take-count-error")
                yield Button("Pick (enter)", id="pick", variant="primary")
                yield Button("Close (esc)", id="close")

    def on_mount(self) -> None:
        if self.image_cls is not None:
            self.query_one("#take-preview").display = False
            self.query_one("#take-preview #preview-empty", Static).update("Loading the last frame…")
        self._draw_rows()
        options = self.query_one("#takes", OptionList)
        if self.seeds:
            options.highlighted = self.seeds.index(self.current) if self.current in self.seeds else 0
            options.focus()
        else:
            self.query_one("#render-takes", Button).focus()

    def _row(self, seed: int) -> Text:
        take, live = self._take(seed), (self.job.takes.get(seed) if self.job else None)
        current = seed == self.current
        row = Text(no_wrap=True, overflow="ellipsis")
        row.append("● " if current else "  ", "bold green")
        row.append(f"seed {seed:<11}", "bold")  # seeds go up to 2**63
        row.append(f"{'current' if current else '':<9}", "green")
        if live is not None and live.state != "done":
            state, style = _live_state(live)
            row.append(f"{state:<34}", style)
        elif take is not None:
            row.append(f"{'' if take.path.exists() else 'no clip':<9}", "red")
            # One line per take at any width: the dialog is the terminal's width less ~10 columns.
            row.append(first_words(take.prompt, max(12, min(52, self.app.size.width - 52))), "dim")
        elif live is not None:  # done, its manifest entry not read yet
            row.append(Path(live.path).name, "green")
        return row

    def _draw_rows(self) -> None:
        """The title and one row per seed; rows in place when the seeds are the same."""
        options = self.query_one("#takes", OptionList)
        seeds = self._seeds()
        job = self.job
        running = job is not None and job.state in ("queued", "running")
        title = f"Takes of “{self.segment_id}”"
        if seeds:
            title += f" — {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
        if running and job is not None:
            done = sum(1 for t in job.takes.values() if t.state == "done")
            title += f" · rendering {done}/{len(job.takes)} (f8 cancels)"
        elif not seeds:
            title = f"No takes of “{self.segment_id}” yet."
        self.query_one("#takes-title", Label).update(title)
        problem = self.query_one("#takes-problem", Static)
        problem.update(f"The recorded takes of “{self.segment_id}” cannot be read: {self.problem}")
        problem.display = bool(self.problem)
        if seeds == self.seeds and options.option_count == len(seeds):
            for seed in seeds:
                options.replace_option_prompt(str(seed), self._row(seed))
        else:
            keep = self.seeds[options.highlighted] if options.highlighted is not None and \
                options.highlighted < len(self.seeds) else None
            first_rows = seeds and not self.seeds
            self.seeds = seeds
            options.set_options(Option(self._row(s), id=str(s)) for s in seeds)
            if seeds:
                options.highlighted = seeds.index(keep) if keep in seeds else 0
            if first_rows and isinstance(self.focused, Button):
                self.call_after_refresh(options.focus)  # the rows are what the keys work on now
        options.display = bool(seeds)
        self.query_one("#takes-empty").display = not seeds
        self.query_one("#take-detail").display = bool(seeds)
        self.query_one("#pick").display = bool(seeds)
        if options.highlighted is not None and seeds:
            self._show_detail(seeds[options.highlighted])

    def refresh_live(self, areas: set[str]) -> None:
        """The app's live state changed: redraw the rows; a take that just finished is read
        back from ``takes.json`` (its prompt); the running take's latent in its preview."""
        if not self.query("#takes"):
            return  # the app is closing: its widgets are gone, events still come
        job = self.job
        if job is not None and any(t.state == "done" and self._take(t.seed) is None for t in job.takes.values()):
            self._read()
        if "takes" in areas:
            self._draw_rows()
        latent = self.live.latent
        if "latent" in areas and latent is not None and self.image_cls is not None and job is not None:
            seed = self._highlighted_seed()
            live = job.takes.get(seed) if seed is not None else None
            if latent.segment == self.segment_id and live is not None and live.state == "rendering":
                pane = self.query_one("#take-preview", PreviewPane)
                pane.display = True
                pane.show_rgb(latent.width, latent.height, latent.rgb,
                              f"seed {seed} · {latent.stage} step {latent.step} · latent")

    def _highlighted_seed(self) -> int | None:
        index = self.query_one("#takes", OptionList).highlighted
        return self.seeds[index] if index is not None and index < len(self.seeds) else None

    def _show_detail(self, seed: int) -> None:
        take, live = self._take(seed), (self.job.takes.get(seed) if self.job else None)
        prompt = take.prompt if take is not None else ""
        if take is not None:
            clip = _shown(take.path, self.root) + ("" if take.path.exists() else "  (missing)")
        elif live is not None and live.path:
            clip = _shown(Path(live.path), self.root)
        else:
            clip = "not rendered yet"
        self.query_one("#take-prompt", Static).update(prompt or ("(no prompt recorded)" if take is not None else
                                                                 "Its prompt shows when it is rendered."))
        self.query_one("#take-clip", Static).update(f"clip: {clip}")
        if self.image_cls is None:
            return
        still = take.still if take is not None else (Path(live.still) if live is not None and live.still else None)
        pane = self.query_one("#take-preview", PreviewPane)
        rendering = live is not None and live.state == "rendering"
        pane.display = still is not None or (rendering and pane.path is None and pane.display)
        if still is not None and pane.path != still:
            pane.show(still, f"seed {seed} · last frame")

    # ------------------------------------------------------------------ actions
    @on(OptionList.OptionHighlighted, "#takes")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_index < len(self.seeds):
            self._show_detail(self.seeds[event.option_index])

    @on(OptionList.OptionSelected, "#takes")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self._pick_seed(self.seeds[event.option_index])

    @on(Button.Pressed, "#pick")
    def _pick(self) -> None:
        seed = self._highlighted_seed()
        if seed is not None:
            self._pick_seed(seed)

    def _pick_seed(self, seed: int) -> None:
        take = self._take(seed)
        if take is not None and take.path.exists():
            self.dismiss(take)
            return
        live = self.job.takes.get(seed) if self.job else None
        why = "is still rendering" if live is not None and live.state in ("queued", "rendering") else \
            "has no clip to continue from"
        self.notify(f"Take {seed} {why}; pick another, or wait for it.", severity="warning", timeout=4)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#render-takes")
    @on(Input.Submitted, "#take-count")
    def action_render_takes(self) -> None:
        """Ask the app for the next ``count`` seeds of this shot; the rows appear as the worker queues them."""
        field = self.query_one("#take-count", Input)
        error = self.query_one("#take-count-error", Static)
        try:
            count = int(field.value)
        except ValueError:
            count = 0
        if not 1 <= count <= MAX_TAKES:
            error.update(f"1 to {MAX_TAKES} takes")
            field.focus()
            return
        error.update("")
        seeds = next_seeds(self.current, set(self._seeds()), count)
        self.post_message(self.Render(self.segment_id, seeds))
        self.query_one("#takes", OptionList).focus()
