"""Flicker per rendered segment: a PSNR-Y sparkline of every frame transition."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from pipeline.wire.protocol import FlickerReport
from sulphur_tui.live import Seam, finite_psnr


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

    def __init__(self, report: FlickerReport, seam: Seam | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.report = report
        self.seam = seam

    def compose(self) -> ComposeResult:
        yield Label(self.report.segment[:9], classes="flicker-id")
        # min, not max, per bucket: one bad transition must stay visible when squeezed.
        yield Sparkline(finite_psnr(self.report.psnr), summary_function=min)
        yield Label(self._stats(), classes="flicker-stats")

    def _stats(self) -> str:
        """``encode min 27.0 · draft seam 17.1``: every figure names the stage it is from
        (the mean moves to the tooltip when there is a seam, to keep the sparkline)."""
        r, seam = self.report, self.seam
        parts = [f"{r.stage} min {_db(r.minimum)}"]
        if seam is None:
            parts.append(f"mean {_db(r.mean)}")
        elif seam.stage == r.stage:
            parts.append(f"seam {_db(seam.psnr)}")
        else:
            parts.append(f"{seam.stage} seam {_db(seam.psnr)}")
        return " · ".join(parts)

    def _describe(self) -> str:
        r = self.report
        worst = ", ".join(f"{i}→{i + 1}" for i in r.worst) or "none"
        text = f"{r.segment} after {r.stage}: PSNR-Y in dB, mean {_db(r.mean)}, worst transitions {worst}"
        if self.seam is not None:
            s = self.seam
            text += f"; seam {_db(s.psnr)} on the {s.stage} (its worst transition {_db(s.stage_minimum)})"
        return text

    def on_mount(self) -> None:
        self._mark_seam()

    def update(self, report: FlickerReport, seam: Seam | None = None) -> None:
        self.report, self.seam = report, seam
        if not self.is_mounted or not self.children:  # composed on mount, from the new report
            return
        self.query_one(Sparkline).data = finite_psnr(report.psnr)
        self.query_one(".flicker-stats", Label).update(self._stats())
        self._mark_seam()

    def _mark_seam(self) -> None:
        self.tooltip = self._describe()
        # A seam below the worst transition of its own stage is the flash users complain about.
        self.set_class(self.seam is not None and self.seam.bad, "-seam-bad")


class FlickerPanel(VerticalScroll):
    """One :class:`FlickerRow` per segment, in storyboard order."""

    DEFAULT_CSS = """
    FlickerPanel { height: auto; max-height: 8; padding: 0 1; }
    FlickerPanel > #flicker-empty { color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Static("No flicker reports yet: they arrive as segments finish.", id="flicker-empty")

    def show(self, reports: dict[str, FlickerReport], order: list[str], seams: dict[str, Seam] | None = None) -> None:
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
                rows[sid] = FlickerRow(rep, (seams or {}).get(sid))
                self.mount(rows[sid], before=later) if later else self.mount(rows[sid])
            elif row.report is not rep or row.seam is not (seams or {}).get(sid):
                row.update(rep, (seams or {}).get(sid))
