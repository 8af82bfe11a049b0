"""Human-facing outputs: image grids, tables."""
