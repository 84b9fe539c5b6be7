"""When and how irisflow runs, and how it is reported: CLI, runner, daemon, metrics, notifications."""

__version__ = "0.1.0"
