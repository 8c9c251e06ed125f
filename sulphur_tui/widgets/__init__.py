"""Reusable widgets of the editor; each carries its own DEFAULT_CSS and COMPONENT_CLASSES."""

from sulphur_tui.widgets.editor import SegmentEditor
from sulphur_tui.widgets.flicker import FlickerPanel, FlickerRow
from sulphur_tui.widgets.preview import HalfBlockImage, PreviewPane
from sulphur_tui.widgets.segments import SegmentList
from sulphur_tui.widgets.stages import StageTimers
from sulphur_tui.widgets.vram import GpuPanel, VramBar

__all__ = ["SegmentEditor", "FlickerPanel", "FlickerRow", "HalfBlockImage", "PreviewPane", "SegmentList",
           "StageTimers", "GpuPanel", "VramBar"]
