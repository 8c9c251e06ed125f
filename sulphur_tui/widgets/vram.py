"""VRAM bars: one per GPU, with the storyboard's budget marked and torch's share shown."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from pipeline.telemetry.host import HostSample
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
        self.styles.height = 3 if self._third_line() else 2

    def update(self, sample: VramSample, budget_gb: float | None) -> None:
        self.sample, self.budget_gb = sample, budget_gb
        self.styles.height = 3 if self._third_line() else 2
        self.refresh()

    def _third_line(self) -> bool:
        s = self.sample
        return bool(self.budget_gb or s.torch_allocated or s.torch_reserved)

    def render(self) -> RenderResult:
        s = self.sample
        style = self.get_component_rich_style
        width = max(10, self.size.width - 2)
        # One line each, cut rather than wrapped: a wrapped name pushed the bar out of sight.
        head = Text.assemble((f"GPU{s.gpu} ", style("vram-bar--label")), (s.name, style("vram-bar--dim")),
                             no_wrap=True, overflow="ellipsis")
        figures = f" {gib(s.used)}/{gib(s.total)} GiB"
        if s.utilisation is not None:
            figures += f"  {s.utilisation:>3d}%"
        if s.temperature is not None:
            figures += f"  {s.temperature}°C"
        over = bool(self.budget_gb) and s.used > (self.budget_gb or 0) * GIB
        bar = self._bar(max(8, width - len(figures)), s.used, s.torch_reserved, s.total,
                        self.budget_gb * GIB if self.budget_gb else None, over)
        lines = [head, Text.assemble(bar, (figures, style("vram-bar--over") if over else ""), no_wrap=True)]
        if self._third_line():
            lines.append(self._budget_line(width))
        return Text("\n").join(lines)

    def _bar(self, cells: int, used: int, torch: int, total: int, mark: float | None, over: bool) -> Text:
        """``cells`` wide: torch's share, the rest of ``used``, free; ``│`` at ``mark`` bytes."""
        style = self.get_component_rich_style
        total = max(1, total)
        used_cells = round(cells * min(1.0, used / total))
        torch_cells = min(used_cells, round(cells * min(1.0, torch / total)))
        mark_cell = None if mark is None else min(cells - 1, round(cells * mark / total))
        bar = Text()
        for i in range(cells):
            if i == mark_cell:
                bar.append("│", style("vram-bar--budget"))
            elif i < torch_cells:
                bar.append("█", style("vram-bar--torch"))
            elif i < used_cells:
                bar.append("█", style("vram-bar--over" if over else "vram-bar--used"))
            else:
                bar.append("░", style("vram-bar--free"))
        return bar

    def _budget_line(self, width: int) -> Text:
        """What the planner works within: torch's memory (else NVML's) against the budget,
        on a bar scaled to the budget — on a 140 GiB card an 8 GiB budget is a sliver."""
        s, style = self.sample, self.get_component_rich_style
        torch = f"torch {gib(s.torch_allocated)} alloc / {gib(s.torch_reserved)} reserved" \
            if s.torch_allocated or s.torch_reserved else ""
        if not self.budget_gb:
            return Text(torch, style("vram-bar--dim"), no_wrap=True, overflow="ellipsis")
        budget = self.budget_gb * GIB
        mine = s.torch_reserved or s.used
        label = f"budget {self.budget_gb:g} GiB "
        tail = f" {torch}" if torch else f" {gib(s.used)} used"
        if width - len(label) - len(tail) < 6:
            tail = f" {gib(mine)}/{self.budget_gb:g}"
        over = mine > budget
        bar = self._bar(max(4, width - len(label) - len(tail)), mine, s.torch_reserved if s.torch_reserved else 0,
                        int(budget), None, over)
        return Text.assemble((label, style("vram-bar--budget")), bar, (tail, style("vram-bar--dim")),
                             no_wrap=True, overflow="ellipsis")


class HostBar(VramBar):
    """``RAM [███│░░] used/total GiB`` with the storyboard's RAM budget marked, and
    ``CPU [██░░░░] 37% of 16 cores``: host memory is the other budget of an offloaded render."""

    DEFAULT_CSS = """
    HostBar { height: 2; width: 1fr; }
    """

    def __init__(self, host: HostSample, budget_gb: float | None = None, **kwargs: object) -> None:
        Widget.__init__(self, **kwargs)  # type: ignore[arg-type]
        self.host, self.budget_gb = host, budget_gb

    def update_host(self, host: HostSample, budget_gb: float | None) -> None:
        self.host, self.budget_gb = host, budget_gb
        self.refresh()

    def render(self) -> RenderResult:
        h, style = self.host, self.get_component_rich_style
        width = max(10, self.size.width - 2)
        budget = self.budget_gb * GIB if self.budget_gb else None
        over = budget is not None and h.ram_used > budget
        ram = f" {gib(h.ram_used)}/{gib(h.ram_total)} GiB" + (f" · budget {self.budget_gb:g}" if budget else "")
        cpu = f" {h.cpu_percent:3.0f}% of {h.cores} cores"
        lines = []
        for label, tail, used, total, mark in (("RAM ", ram, h.ram_used, h.ram_total, budget),
                                               ("CPU ", cpu, h.cpu_percent, 100.0, None)):
            cells = max(6, width - len(label) - len(tail))
            bar = self._bar(cells, int(used * 1000), 0, int(total * 1000), None if mark is None else mark * 1000,
                            over and label == "RAM ")
            lines.append(Text.assemble((label, style("vram-bar--label")), bar,
                                       (tail, style("vram-bar--over") if over and label == "RAM " else ""),
                                       no_wrap=True, overflow="ellipsis"))
        return Text("\n").join(lines)


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

    def show_host(self, host: HostSample | None, budget_gb: float | None) -> None:
        """The host's RAM and CPU under the GPUs (alone where there is no GPU)."""
        bars = list(self.query(HostBar))
        if host is None:
            for bar in bars:
                bar.remove()
        elif bars:
            bars[0].update_host(host, budget_gb)
        else:
            self.mount(HostBar(host, budget_gb, id="host"))
