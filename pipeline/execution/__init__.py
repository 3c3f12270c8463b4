"""Where a photo renders: the coordinator, the byte-only executor protocol, the local thread and Ray."""
