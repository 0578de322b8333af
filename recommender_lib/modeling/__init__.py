"""Modeling stage: evaluation splits, features, baselines and the two-tower model."""
