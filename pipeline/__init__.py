"""Sulphur's render side, in layers that import downward only (README, Architecture):
cli → worker → render → stages → models → memory → quality | telemetry → project → wire.

The TUI imports only ``pipeline.project``, ``pipeline.wire``, ``pipeline.worker.client`` and
``pipeline.telemetry``; ``lint-imports`` (pyproject.toml) checks both rules.
"""
