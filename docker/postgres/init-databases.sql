-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
-- POSTGRES_DB (`dagster`) is created by the image; MLflow gets its own database because both
-- tools have a `runs` table. `feedback` holds the application feedback events
-- (recommender_lib/sources/feedback/store.py creates its table on first use).
CREATE DATABASE mlflow;
CREATE DATABASE feedback;
