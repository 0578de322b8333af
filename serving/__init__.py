"""The Ciné-Reco serving API: FastAPI over the champion serving bundle (docs/architecture.md §7).

Run it with `uvicorn serving.app:app`; `serving.settings` lists the environment variables.
"""
