"""Phase 2, model: artifact scanning, and later signing, the registry, SBOM and CVEs."""
