"""Model families (one module each) and the preset registry."""
