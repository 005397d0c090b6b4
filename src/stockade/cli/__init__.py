"""The `stockade` command line: one command group per lifecycle phase."""
