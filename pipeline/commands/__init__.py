"""What each CLI command does; ``pipeline.cli`` only parses arguments and maps errors to exit codes."""
