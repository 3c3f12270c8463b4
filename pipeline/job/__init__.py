"""One photo through the stages: decode, the plugin stages, publishing, the sidecar."""
