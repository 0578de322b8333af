"""Registry stage: MLflow experiment tracking, registered versions and the `champion` alias,
promotion gates and log, the CLI."""
