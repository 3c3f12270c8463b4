"""Running as a systemd service: writing a unit that can work."""
