"""The watch-folder daemon: a thin loop around the coordinator, and what it does with the inbox and the originals."""
