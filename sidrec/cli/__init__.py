"""Command-line data tools (console scripts): SID construction and interaction-log conversion."""
