"""Phase 6, retirement: take systems, models, datasets and endpoints out of service for good."""
