"""Flicker per rendered segment: a PSNR-Y sparkline of every frame transition."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from pipeline.wire.protocol import FlickerReport
from sulphur_tui.live import finite_psnr


def _db(v: float | None) -> str:
    if v is None:
        return "–"
    return "∞" if v == float("inf") else f"{v:.1f}"


class FlickerRow(Horizontal):
    """``id  ▇▇▆▇▂▇  min 24.1 · mean 38.2 dB · seam 31.0``; low PSNR bars take the error colour."""

    DEFAULT_CSS = """
    FlickerRow { height: 1; }
    FlickerRow > .flicker-id { width: 10; text-style: bold; }
    FlickerRow > Sparkline { width: 1fr; min-width: 8; }
    FlickerRow > Sparkline > .sparkline--min-color { color: $error; }
    FlickerRow > Sparkline > .sparkline--max-color { color: $success; }
    FlickerRow > .flicker-stats { width: auto; color: $text-muted; padding-left: 1; }
    FlickerRow.-seam-bad > .flicker-stats { color: $warning; }
    """

    def __init__(self, report: FlickerReport, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.report = report

    def compose(self) -> ComposeResult:
        yield Label(self.report.segment[:9], classes="flicker-id")
        # min, not max, per bucket: one bad transition must stay visible when squeezed.
        yield Sparkline(finite_psnr(self.report.psnr), summary_function=min)
        yield Label(self._stats(), classes="flicker-stats")

    def _stats(self) -> str:
        r = self.report
        parts = [f"min {_db(r.minimum)}", f"mean {_db(r.mean)}"]
        if r.seam_psnr is not None:
            parts.append(f"seam {_db(r.seam_psnr)}")
        return " · ".join(parts)

    def _describe(self) -> str:
        r = self.report
        worst = ", ".join(f"{i}→{i + 1}" for i in r.worst) or "none"
        return f"{r.segment} after {r.stage}: PSNR-Y in dB, worst transitions {worst}"

    def on_mount(self) -> None:
        self._mark_seam()

    def update(self, report: FlickerReport) -> None:
        self.report = report
        self.query_one(Sparkline).data = finite_psnr(report.psnr)
        self.query_one(".flicker-stats", Label).update(self._stats())
        self._mark_seam()

    def _mark_seam(self) -> None:
        report = self.report
        self.tooltip = self._describe()
        # A seam far below the segment's own transitions is the flash users complain about.
        self.set_class(report.seam_psnr is not None and report.seam_psnr < report.minimum, "-seam-bad")


class FlickerPanel(VerticalScroll):
    """One :class:`FlickerRow` per segment, in storyboard order."""

    DEFAULT_CSS = """
    FlickerPanel { height: auto; max-height: 8; padding: 0 1; }
    FlickerPanel > #flicker-empty { color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Static("No flicker reports yet: they arrive as segments finish.", id="flicker-empty")

    def show(self, reports: dict[str, FlickerReport], order: list[str]) -> None:
        self.query_one("#flicker-empty").display = not reports
        rows = {r.report.segment: r for r in self.query(FlickerRow)}
        wanted = [s for s in order if s in reports] + [s for s in reports if s not in order]
        for row in [r for sid, r in rows.items() if sid not in reports]:
            rows.pop(row.report.segment)
            row.remove()
        for i, sid in enumerate(wanted):
            rep = reports[sid]
            row = rows.get(sid)
            if row is None:
                # Mount in storyboard order: before the first later segment already shown.
                later = next((rows[s] for s in wanted[i + 1:] if s in rows), None)
                rows[sid] = FlickerRow(rep)
                self.mount(rows[sid], before=later) if later else self.mount(rows[sid])
            elif row.report is not rep:
                row.update(rep)
