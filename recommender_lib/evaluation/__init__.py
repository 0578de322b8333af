"""Evaluation stage: metrics and the protocols, measured through the serving engine."""
