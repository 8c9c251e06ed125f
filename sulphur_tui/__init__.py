"""Sulphur's terminal editor (Textual). Never imports torch; see app.create_app."""
