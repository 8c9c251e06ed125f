"""The job log panel (ctrl+l): every job's start, each stage of each shot, fallbacks,
warnings, errors and where the output went, one timed line each."""

from __future__ import annotations

import os
import time
from pathlib import Path

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

    def catch_up(self, live: LiveState, base: Path | None = None) -> None:
        """Write the entries added since the last call; paths inside ``base`` (the storyboard's
        folder) are written relative to it, as the status line does."""
        new = live.journal_count - self._written
        if new <= 0:
            return
        entries = list(live.journal)[-min(new, len(live.journal)):]
        prefix = f"{base}{os.sep}" if base is not None else None
        self.write_lines(f"{time.strftime('%H:%M:%S', time.localtime(ts))}  "
                         f"{text.replace(prefix, '') if prefix else text}" for ts, text in entries)
        self._written = live.journal_count
