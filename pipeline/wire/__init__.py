"""Protocol messages and their framing; imports neither torch nor textual."""
