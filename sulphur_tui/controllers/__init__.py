"""What the editor does, apart from drawing: each controller holds one concern and is
driven by the app's actions and messages. They touch widgets only on the UI thread."""

from sulphur_tui.controllers.disk import DiskWatcher
from sulphur_tui.controllers.editing import Editing
from sulphur_tui.controllers.render import RenderControl

__all__ = ["DiskWatcher", "Editing", "RenderControl"]
