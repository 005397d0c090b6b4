"""The CLI fixture lives in tests/conftest.py; `Run` is re-exported for type hints."""

from ..conftest import Run

__all__ = ["Run"]
