"""Sample data read from installed packages, a synthetic phantom and the demo's brain-structure labels."""
