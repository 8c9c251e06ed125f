"""VRAM bars: one per GPU, with the storyboard's budget marked and torch's share shown."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from pipeline.wire.protocol import VramSample

GIB = 1024**3


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f}"


class VramBar(Widget):
    """``GPU0 name  [███▒▒│░░░] used/total GiB  util  temp`` plus a torch line.

    The bar shows NVML's used memory; the part of it the worker's torch has reserved
    is drawn in its own style, and ``│`` marks the storyboard's VRAM budget.
    """

    COMPONENT_CLASSES = {
        "vram-bar--used",
        "vram-bar--torch",
        "vram-bar--free",
        "vram-bar--budget",
        "vram-bar--over",
        "vram-bar--label",
        "vram-bar--dim",
    }
    DEFAULT_CSS = """
    VramBar {
        height: 2;
        width: 1fr;
    }
    VramBar > .vram-bar--used { color: $primary; }
    VramBar > .vram-bar--torch { color: $secondary; }
    VramBar > .vram-bar--free { color: $panel-lighten-2; }
    VramBar > .vram-bar--budget { color: $warning; text-style: bold; }
    VramBar > .vram-bar--over { color: $error; }
    VramBar > .vram-bar--label { text-style: bold; }
    VramBar > .vram-bar--dim { color: $text-muted; }
    """

    def __init__(self, sample: VramSample, budget_gb: float | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.sample = sample
        self.budget_gb = budget_gb

    def update(self, sample: VramSample, budget_gb: float | None) -> None:
        self.sample, self.budget_gb = sample, budget_gb
        self.refresh()

    def render(self) -> RenderResult:
        s = self.sample
        style = self.get_component_rich_style
        width = max(10, self.size.width - 2)
        head = Text.assemble((f"GPU{s.gpu} ", style("vram-bar--label")), (s.name, style("vram-bar--dim")))
        figures = f" {gib(s.used)}/{gib(s.total)} GiB"
        if s.utilisation is not None:
            figures += f"  {s.utilisation:>3d}%"
        if s.temperature is not None:
            figures += f"  {s.temperature}°C"
        bar_w = max(8, width - len(figures))
        bar = Text()
        total = max(1, s.total)
        used_cells = round(bar_w * min(1.0, s.used / total))
        torch_cells = min(used_cells, round(bar_w * min(1.0, s.torch_reserved / total)))
        budget_cell = None
        if self.budget_gb:
            budget_cell = min(bar_w - 1, round(bar_w * self.budget_gb * GIB / total))
        over = bool(self.budget_gb) and s.used > (self.budget_gb or 0) * GIB
        for i in range(bar_w):
            if i == budget_cell:
                bar.append("│", style("vram-bar--budget"))
            elif i < torch_cells:
                bar.append("█", style("vram-bar--torch"))
            elif i < used_cells:
                bar.append("█", style("vram-bar--over" if over else "vram-bar--used"))
            else:
                bar.append("░", style("vram-bar--free"))
        line2 = Text.assemble(bar, (figures, style("vram-bar--over") if over else ""))
        detail = []
        if s.torch_allocated or s.torch_reserved:
            detail.append(f"torch {gib(s.torch_allocated)} alloc / {gib(s.torch_reserved)} reserved")
        if self.budget_gb:
            detail.append(f"budget {self.budget_gb:g} GiB")
        if detail:
            head.append("  " + " · ".join(detail), style("vram-bar--dim"))
        return Text("\n").join([head, line2])


def merge_samples(local: list[VramSample], worker: dict[int, VramSample]) -> list[VramSample]:
    """NVML figures from this process, torch figures from the worker's samples.

    Over SSH to the GPU box both come from the same machine; when this process has no
    NVML (a replay, a client without the driver), the worker's own NVML figures stand.
    """
    by_gpu = {s.gpu: s for s in local}
    out = []
    for gpu in sorted(set(by_gpu) | set(worker)):
        mine, theirs = by_gpu.get(gpu), worker.get(gpu)
        if mine and theirs:
            out.append(VramSample(gpu=gpu, name=mine.name, used=mine.used, total=mine.total,
                                  utilisation=mine.utilisation, temperature=mine.temperature,
                                  torch_allocated=theirs.torch_allocated, torch_reserved=theirs.torch_reserved,
                                  ts=mine.ts))
        elif mine:
            out.append(mine)
        elif theirs and theirs.total:
            out.append(theirs)
    return out


class GpuPanel(Vertical):
    """Every GPU's bar, or one plain sentence when there is none."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; }
    GpuPanel > #no-gpu { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, reason: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.reason = reason
        self._bars: dict[int, VramBar] = {}

    def compose(self) -> ComposeResult:
        yield Static(self.reason or "Waiting for the first GPU reading…", id="no-gpu")

    def show(self, samples: list[VramSample], budget_gb: float | None, reason: str = "") -> None:
        note = self.query_one("#no-gpu", Static)
        if not samples:
            note.update(reason or self.reason or "No NVIDIA GPU found.")
            note.display = True
        else:
            note.display = False
        seen = set()
        for s in samples:
            seen.add(s.gpu)
            bar = self._bars.get(s.gpu)
            if bar is None:
                bar = self._bars[s.gpu] = VramBar(s, budget_gb, id=f"gpu-{s.gpu}")
                self.mount(bar)
            else:
                bar.update(s, budget_gb)
        for gpu in set(self._bars) - seen:
            self._bars.pop(gpu).remove()
