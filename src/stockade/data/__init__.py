"""Phase 1, data: provenance, integrity and (later) content scanning of datasets."""
