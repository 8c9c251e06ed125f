"""Quality measurements: flicker (PSNR-Y) and drift."""
