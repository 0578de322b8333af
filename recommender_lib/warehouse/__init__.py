"""Warehouse stage: DuckDB tables loaded from the raw files, the recommendable catalogue,
the pandera schemas and the quality rules over them."""
