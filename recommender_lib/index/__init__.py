"""Index stage: content vectors, the exact cosine content index,
top-k selection and title search."""
