"""The style-transfer engine: tensors in, tensor out; no files, no config objects."""
