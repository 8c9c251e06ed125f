"""The job log panel (ctrl+l): every job's start, each stage of each shot, fallbacks,
warnings, errors and where the output went, one timed line each."""

from __future__ import annotations

import time

from textual.widgets import Log

from sulphur_tui.live import LiveState


class JobLog(Log):
    """Follows :attr:`LiveState.journal`; hidden until asked for, filled all the same."""

    DEFAULT_CSS = """
    JobLog { height: 10; border: round $panel-lighten-2; border-title-color: $text-muted; padding: 0 1; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=1000, **kwargs)  # type: ignore[arg-type]
        self._written = 0  # journal entries written so far (the journal itself is bounded)

    def catch_up(self, live: LiveState) -> None:
        """Write the entries added since the last call."""
        new = live.journal_count - self._written
        if new <= 0:
            return
        entries = list(live.journal)[-min(new, len(live.journal)):]
        self.write_lines(f"{time.strftime('%H:%M:%S', time.localtime(ts))}  {text}" for ts, text in entries)
        self._written = live.journal_count
