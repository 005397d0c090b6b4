"""The dashboard: a static page that reads the control-plane REST API with the user's token."""

from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")

__all__ = ["STATIC_DIR"]
