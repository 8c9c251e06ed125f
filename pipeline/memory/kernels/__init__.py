"""Custom GPU kernels (Triton ships with CUDA builds of torch); each has a torch fallback."""
