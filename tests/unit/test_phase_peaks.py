"""Which phase of a stage set its GPU peak, as one log line a bench can read (issue 20)."""

from __future__ import annotations

from pipeline.stages.phase_peaks import GiB, PhasePeaks
from pipeline.wire.protocol import Event, Log


def test_a_cpu_stage_marks_nothing_and_says_nothing() -> None:
    peaks, out = PhasePeaks("refine", "cpu"), []
    peaks.mark("denoise")
    peaks.emit(out.append)
    assert out == []


def test_the_line_names_each_phase_in_order_with_its_running_peak() -> None:
    peaks, out = PhasePeaks("refine", "cuda"), []
    peaks.marks = [("upsample", int(2.5 * GiB), 3 * GiB, 1.23), ("denoise", 4 * GiB, int(4.5 * GiB), 3.0),
                   ("decode", int(6.25 * GiB), int(6.75 * GiB), 12.06)]
    peaks.emit(out.append)
    assert len(out) == 1 and isinstance(out[0], Log) and out[0].level == "debug"
    assert out[0].message == ("refine memory: peak after upsample 2.50/3.00 at 1.2 s, after denoise 4.00/4.50 "
                              "at 3.0 s, after decode 6.25/6.75 at 12.1 s GiB allocated/reserved")
    assert isinstance(out[0], Event)
