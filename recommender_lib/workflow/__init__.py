"""The workflow: the steps the Dagster assets and the benchmarks run, one call each."""
