"""Stage timers of the running segment: elapsed, step i/n and ETA per stage."""

from __future__ import annotations

from pathlib import PurePath

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from pipeline.wire.protocol import STAGES
from sulphur_tui.live import LiveState, StageTimer

_GLYPH = {"pending": "·", "running": "▶", "done": "✔", "cached": "≡", "failed": "✖", "stopped": "■", "skipped": "–"}


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def split_at_comma(text: str, width: int) -> tuple[str, str]:
    """``text`` as a first line of at most ``width`` cells ending after a comma (when one is
    there to break at), and the rest."""
    if len(text) <= width:
        return text, ""
    cut = text.rfind(", ", 0, width)
    if cut <= 0:
        return text[:width], text[width:]
    return text[:cut + 1], text[cut + 2:]


class StageTimers(Widget):
    """Five rows, one per stage, for the segment the worker is on; with the Ray engine,
    one more row per stage actor (several segments are in flight at once)."""

    COMPONENT_CLASSES = {
        "stage-timers--pending",
        "stage-timers--running",
        "stage-timers--done",
        "stage-timers--cached",
        "stage-timers--failed",
        "stage-timers--stopped",
        "stage-timers--skipped",
        "stage-timers--title",
    }
    DEFAULT_CSS = """
    StageTimers { height: auto; min-height: 7; padding: 0 1; }
    StageTimers > .stage-timers--pending { color: $text-muted; }
    StageTimers > .stage-timers--running { color: $accent; text-style: bold; }
    StageTimers > .stage-timers--done { color: $success; }
    StageTimers > .stage-timers--cached { color: $secondary; }
    StageTimers > .stage-timers--failed { color: $error; text-style: bold; }
    StageTimers > .stage-timers--stopped { color: $warning; }
    StageTimers > .stage-timers--skipped { color: $text-muted; }
    StageTimers > .stage-timers--title { text-style: bold; }
    """

    def __init__(self, live: LiveState, clock: object, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.live = live
        self.clock = clock  # () -> float: wall time live, event time in a replay
        self._shape: tuple[int, int, int] = (0, 0, 0)

    def redraw(self) -> None:
        """Repaint; when rows came or went, measure again (an auto height is cached by width,
        so a film row or an actor row would otherwise stay below the panel's edge)."""
        live = self.live
        shape = (len(live.timers), self._plan_lines(), len(live.actors))
        if shape != self._shape:
            self._shape = shape
            self.clear_cached_dimensions()
            self.refresh(layout=True)
        else:
            self.refresh()

    def render(self) -> RenderResult:
        live, now = self.live, self.clock()  # type: ignore[operator]
        table = Table.grid(padding=(0, 1), expand=True)
        # Names and times never give way: a GPU plan string is longer than the panel, so the
        # plan is a line of its own below, cut at the panel's edge (the tooltip has it whole).
        table.add_column("stage", justify="left", no_wrap=True, min_width=9, ratio=1)
        for name in ("step", "elapsed", "eta"):
            table.add_column(name, justify="right", no_wrap=True)
        for stage in list(STAGES) + [s for s in live.timers if s not in STAGES]:
            t = live.timers.get(stage)
            if t is not None:
                table.add_row(*self._row(t, now))
        parts: list[RenderResult] = [self._title(now), table]
        plan = self._plan_line()
        if plan is not None:
            parts.append(plan)
        if live.actors:
            parts.append(self._actors(now))
        return Group(*parts)

    def _title(self, now: float) -> Text:
        """One line: the shot, when everything queued is done, the job; cut, never wrapped."""
        live, style = self.live, self.get_component_rich_style
        job = live.active_job()
        title = Text(no_wrap=True, overflow="ellipsis")
        if live.timer_segment:
            title.append(f"shot {live.timer_segment}", style("stage-timers--title"))
        if job:
            eta = live.queue_eta(now)
            if eta is not None:
                title.append(f" · all done in ~{fmt_seconds(eta)}")
            waiting = sum(1 for j in live.jobs.values() if j.state == "queued" and j is not job)
            if waiting:
                title.append(f" · {waiting} more queued")
            sep = " · " if title.plain else ""  # a job still queued has no shot yet
            title.append(f"{sep}job {job.job_id[:8] or '?'} {job.state}", style("stage-timers--pending"))
            if job.state == "queued" and (ahead := live.ahead_elsewhere()):
                title.append(f" behind {PurePath(ahead[0].storyboard).name}", style("stage-timers--pending"))
        elif not live.timer_segment:
            title.append("idle: F5 renders all, F6 this shot", style("stage-timers--pending"))
        return title

    def _row(self, t: StageTimer, now: float) -> tuple[Text, str, str, str]:
        live = self.live
        st = self.get_component_rich_style(f"stage-timers--{t.state}")
        step = f"{t.step}/{t.total}" if t.total else ("" if t.state in ("pending", "skipped") else "–")
        eta = live.eta(t, now) if t.state in ("running", "pending") else None
        eta_text = f"ETA {fmt_seconds(eta)}" if eta is not None and t.state == "running" else (
            f"~{fmt_seconds(eta)}" if eta is not None else "")
        elapsed = fmt_seconds(live.elapsed(t, now)) if t.state in ("running", "done", "stopped") else (
            t.state if t.state in ("cached", "skipped") else "")
        return Text(f"{_GLYPH.get(t.state, '?')} {t.stage}", st, no_wrap=True), step, elapsed, eta_text

    def _plan_lines(self) -> int:
        line = self._plan_line()
        return 0 if line is None else len(line.plain.splitlines())

    def _plan_line(self) -> Text | None:
        """The memory plan of the running stage (else the last one that ran): two lines at
        most, broken after a comma, the rest cut with an ellipsis."""
        timers = [t for t in self.live.timers.values() if t.plan]
        running = [t for t in timers if t.state == "running"]
        ran = [t for t in timers if t.state in ("done", "failed")]
        t = (running or ran or [None])[-1]
        self.tooltip = "\n".join(f"{x.stage}: {x.plan}" for x in timers) or None
        if t is None:
            return None
        head = f"{t.stage} plan "
        first, rest = split_at_comma(t.plan, max(10, self.size.width - len(head)))
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(head, self.get_component_rich_style("stage-timers--pending"))
        line.append(first, "dim")
        if rest:
            line.append("\n" + " " * len(head) + rest, "dim")
        return line

    def _actors(self, now: float) -> Table:
        """One row per engine worker (Ray actor): where it runs, what, for how long, busy so far."""
        style = self.get_component_rich_style
        table = Table.grid(padding=(0, 1), expand=True)
        for name, justify in (("actor", "left"), ("where", "left"), ("doing", "left"), ("step", "right"),
                              ("elapsed", "right"), ("busy", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for a in self.live.actors.values():
            running = a.state == "running"
            st = style("stage-timers--running" if running else "stage-timers--pending")
            doing = " ".join(x for x in (a.segment, a.stage) if x) if running else "idle"
            step = f"{a.step}/{a.total}" if running and a.total else ""
            elapsed = fmt_seconds(now - a.started) if running else ""
            table.add_row(Text(f"{_GLYPH['running' if running else 'pending']} {a.label}", st), a.where, doing,
                          step, elapsed, Text(f"busy {fmt_seconds(a.busy)}", "dim"))
        return table

