"""F1: what the screen shows and every key, read from the live bindings."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from sulphur_tui.widgets.segments import SegmentList

ABOUT = """\
# Sulphur editor

**Left:** the shots of the storyboard and the editor of the selected one.
**Right:** GPU memory (NVML used/total, the storyboard's `vram_budget_gb` marked `│`;
a second bar measures the worker's torch memory against that budget), the stage timers
of the running shot with the memory plan of its stage (■ cut short, – skipped), a flicker sparkline per rendered
shot (PSNR-Y of every frame transition, from the stage it names; red bars are the worst;
*seam* is the PSNR across the cut from the previous shot, on the stage it names, and is
flagged when below that stage's worst transition) and the latest frame; while a draft or
refine samples, the Preview shows its latent after every step ("latent": no decoder runs,
its channels are projected to false colours, so look for composition and motion).
Below 100 columns the two sides are tabs: `f9` switches.

**Status line:** the worker, then the latest news: a log line while rendering, how the
last job ended (the film's path, or why not) until the next one starts.

**Status:** `● rendered` · `◐ stale` (it or a shot it continues from changed since its
render) · `◷ queued` · `▶ 42%` rendering · `✖ failed` · `○ new`.

**Shot form:** a blank field is the project's value (or none). The per-shot controls are
one line each, checked as a load and a render check them (a file that is not there is
refused on the field, by name; paths are relative to the storyboard's folder):
`keyframes` `0=start.png, -1=end.png@0.8` (frame=still, -1 the last frame, `@` a strength
0–1) · `retake` `40-56` (regenerate those frames, keep the rest) · `LoRAs`
`loras/grain.safetensors@0.8, hf://owner/name/file.safetensors@1` (`@` a strength −10…10,
default 1; `hf://` a Hub file, fetched by `sulphur models pull`) · `audio` `voice.wav`, or
`score.flac+12.5` to start 12.5 s into the file. Typing in one field is one `ctrl+z`.

**Takes (`t`):** several seeds of the selected shot. `r` renders the next N seeds through
the worker, one row each (its stage, steps and progress, then its clip and last frame);
`enter` on a rendered take makes it the shot's (its seed, its prompt locked; `ctrl+z`
undoes). **Rename (`n`):** a new id for the shot; if it has rendered files (its MP4,
preview, takes) you are asked whether to rename them too, and anchors pointing at them follow;
`ctrl+z` offers to move them back.

Saving merges your edits into the file: comments and key order stay. If another program
changes the file you are asked before anything is overwritten. Renders run in a
background worker; quitting the editor does not stop them.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: 90%; border: thick $primary; background: $panel; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close help", id="help.close")]

    def compose(self) -> ComposeResult:
        lines = [ABOUT, "## Keys", "", "| key | action |", "|---|---|"]
        seen = set()
        for binding in self._bindings_to_list():
            if binding.description and (binding.key, binding.description) not in seen:
                seen.add((binding.key, binding.description))
                key = self.app.get_key_display(binding)
                lines.append(f"| `{key}` | {binding.description} |")
        lines += ["", "`ctrl+p` opens the command palette: every action is there by name."]
        with VerticalScroll():
            yield Markdown("\n".join(lines))

    def _bindings_to_list(self) -> list[Binding]:
        out: list[Binding] = []
        for b in list(self.app.BINDINGS) + list(SegmentList.BINDINGS):
            if isinstance(b, Binding):
                out.append(b)
        return out
