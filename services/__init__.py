"""Code the example's steps share, imported with absolute imports (``from services.jobs import ...``)."""
