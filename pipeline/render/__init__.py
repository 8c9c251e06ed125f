"""Rendering a storyboard: the runner, the stage cache, engines (local, Ray), takes, extend."""
