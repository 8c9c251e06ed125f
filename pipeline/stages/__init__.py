"""Pipeline stages, one module each: enhance, draft, refine, upscale, encode."""
