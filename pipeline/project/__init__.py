"""A project on disk: the storyboard model and its TOML I/O; imports neither torch nor textual."""
