"""GPU and host telemetry (NVML) for the worker and the TUI; no torch."""
