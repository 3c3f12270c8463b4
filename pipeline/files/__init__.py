"""Files others may touch: never overwrite, open without following planted links, hash, notice unfinished writes."""
