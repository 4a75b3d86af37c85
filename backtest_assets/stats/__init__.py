"""Pure statistics for Phase 2 (no Dagster): mean tests on event returns, FDR control."""
