"""Engine stage: the one ranking function and the in-memory recommender built from a bundle."""
