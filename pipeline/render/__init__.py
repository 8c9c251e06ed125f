"""Rendering a storyboard: the job (storyboard + overrides), the runner, the fallback loop,
film assembly, the stage cache, engines (local, Ray), takes, extend."""
