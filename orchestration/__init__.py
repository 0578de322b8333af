"""Dagster definitions for the Ciné-Reco platform: thin wrappers around `recommender_lib`."""
