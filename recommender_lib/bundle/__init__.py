"""Bundle stage: the hashed serving-bundle format and the layout of what a bundle carries."""
