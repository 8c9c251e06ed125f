"""The takes of one shot, and picking the one the film continues from.

``sulphur takes FILE SHOT --seeds N`` renders several seeds of a shot in parallel and
records them in ``renders/<stem>/takes/<id>/takes.json``, as
:func:`pipeline.render.engines.ray_engine.render_takes` writes it::

    {"segment": "<id>", "takes": {"<seed>": {"path": "…/seed-<seed>.mp4", "prompt": "…"}}}

This screen lists them and dismisses with the take the user picks; the app then puts its
seed and its prompt (locked) into the open document, which is what ``--pick`` does to the
file, so unsaved edits and the changed-on-disk check work as for any other edit. The
manifest is read here rather than through :mod:`pipeline.render.takes`: the editor
imports only the protocol and storyboard modules of the pipeline.
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
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Label, OptionList, Static
from textual.widgets.option_list import Option

from pipeline.project.storyboard import Storyboard
from sulphur_tui.widgets.preview import PreviewPane
from sulphur_tui.widgets.segments import first_words


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


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class TakesScreen(ModalScreen[Take | None]):
    """The takes of the selected shot; dismisses with the picked :class:`Take` or None."""

    DEFAULT_CSS = """
    TakesScreen { align: center middle; }
    TakesScreen > Vertical {
        width: 100; max-width: 100%; height: auto; max-height: 95%;
        border: thick $primary; background: $panel; padding: 1 2;
    }
    TakesScreen .question { text-style: bold; margin-bottom: 1; }
    TakesScreen .detail { color: $text-muted; margin-bottom: 1; }
    TakesScreen .command { text-style: bold; color: $accent; margin-bottom: 1; padding-left: 4; }
    TakesScreen #takes { height: auto; max-height: 8; margin-bottom: 1; }
    TakesScreen #take-detail { height: auto; }
    TakesScreen #take-text { width: 1fr; height: auto; }
    TakesScreen #take-prompt { margin-bottom: 1; }
    TakesScreen #take-clip { color: $text-muted; }
    TakesScreen #take-preview { width: 40; height: auto; min-height: 0; margin-left: 2; }
    TakesScreen #take-preview > #preview-empty { height: 1; }
    TakesScreen #buttons { height: auto; align-horizontal: right; margin-top: 1; }
    TakesScreen Button { margin-left: 1; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="takes.close")]

    def __init__(self, sb: Storyboard, segment_id: str, image_cls: type[Widget] | None) -> None:
        super().__init__()
        self.sb, self.segment_id, self.image_cls = sb, segment_id, image_cls
        self.root = sb.path.parent
        self.current = segment_seed(sb, segment_id)
        try:
            self.takes, self.problem = read_takes(sb, segment_id), ""
        except (OSError, ValueError) as exc:
            self.takes, self.problem = [], str(exc)

    def compose(self) -> ComposeResult:
        sid = self.segment_id
        with Vertical():
            if self.problem:
                yield Label(f"The takes of “{sid}” cannot be read.", classes="question")
                yield Static(self.problem, classes="detail")
            elif not self.takes:
                yield Label(f"No takes of “{sid}” yet.", classes="question")
                yield Static("Render several seeds of this shot in parallel, from the storyboard's folder:",
                             classes="detail")
                yield Static(f"sulphur takes {self.sb.path.name} {sid} --seeds 4", classes="command")
                yield Static("then open this again to pick the one the film continues from.",
                             classes="detail")
            else:
                yield Label(f"Takes of “{sid}” — {len(self.takes)} seeds", classes="question")
                yield OptionList(*(self._option(t) for t in self.takes), id="takes")
                with Horizontal(id="take-detail"):
                    with Vertical(id="take-text"):
                        yield Static("", id="take-prompt")
                        yield Static("", id="take-clip")
                    if self.image_cls is not None:
                        yield PreviewPane(self.image_cls, id="take-preview")
            with Horizontal(id="buttons"):
                if self.takes:
                    yield Button("Pick (enter)", id="pick", variant="primary")
                yield Button("Close (esc)", id="close")

    def _option(self, take: Take) -> Option:
        current = take.seed == self.current
        row = Text(no_wrap=True, overflow="ellipsis")
        row.append("● " if current else "  ", "bold green")
        row.append(f"seed {take.seed:<11}", "bold")  # seeds go up to 2**31
        row.append(f"{'current' if current else '':<9}", "green")
        row.append(f"{'' if take.path.exists() else 'no clip':<9}", "red")
        row.append(first_words(take.prompt, 52), "dim")
        return Option(row, id=str(take.seed))

    def on_mount(self) -> None:
        if not self.takes:
            self.query_one("#close", Button).focus()
            return
        if self.image_cls is not None:
            self.query_one("#take-preview").display = False
            self.query_one("#take-preview #preview-empty", Static).update("Loading the last frame…")
        options = self.query_one("#takes", OptionList)
        seeds = [t.seed for t in self.takes]
        options.highlighted = seeds.index(self.current) if self.current in seeds else 0
        options.focus()

    @on(OptionList.OptionHighlighted, "#takes")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        take = self.takes[event.option_index]
        self.query_one("#take-prompt", Static).update(take.prompt or "(no prompt recorded)")
        clip = _shown(take.path, self.root) + ("" if take.path.exists() else "  (missing)")
        self.query_one("#take-clip", Static).update(f"clip: {clip}")
        if self.image_cls is None:
            return
        pane = self.query_one("#take-preview", PreviewPane)
        pane.display = take.still is not None
        if take.still is not None:
            pane.show(take.still, f"seed {take.seed} · last frame")

    @on(OptionList.OptionSelected, "#takes")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.takes[event.option_index])

    @on(Button.Pressed, "#pick")
    def _pick(self) -> None:
        index = self.query_one("#takes", OptionList).highlighted
        if index is not None:
            self.dismiss(self.takes[index])

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)
