"""The exit statuses every command keeps (ARCHITECTURE.md's invariants)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
