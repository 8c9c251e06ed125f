"""Memory planning: plan types, the planner, placement and offload, kernels."""
