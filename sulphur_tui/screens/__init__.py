"""Screens: the editor's modals and the broken-file view."""

from sulphur_tui.screens.broken import BrokenFileScreen
from sulphur_tui.screens.dialogs import ConfirmQuit, DiskChangedDialog, FilePicker
from sulphur_tui.screens.help import HelpScreen
from sulphur_tui.screens.project import ProjectEdit, ProjectScreen
from sulphur_tui.screens.rename import ConfirmRenameFiles, RenameScreen
from sulphur_tui.screens.takes import TakesScreen

__all__ = ["BrokenFileScreen", "ConfirmQuit", "ConfirmRenameFiles", "DiskChangedDialog", "FilePicker", "HelpScreen",
           "ProjectEdit", "ProjectScreen", "RenameScreen", "TakesScreen"]
