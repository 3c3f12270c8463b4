"""The outbox's gallery page and its thumbnails."""
