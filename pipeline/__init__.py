"""Sulphur's render side: storyboard model, stages, models, memory planning, worker.

Only ``pipeline.wire.protocol`` and ``pipeline.project.storyboard`` may be imported by the TUI; every
module that needs torch imports it lazily or lives under ``stages/`` and ``models/``.
"""
