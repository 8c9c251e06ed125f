"""The `sulphur` commands and their output; argument parsing lives only here."""
