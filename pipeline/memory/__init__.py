"""Memory: plan types, the planner, per-family recipes, placement and offload, kernels,
and what is loaded (LoadedModels)."""
