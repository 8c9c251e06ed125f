"""A project on disk: the storyboard model and its TOML I/O, segment selection and the
layout of every path; imports neither torch nor textual."""
