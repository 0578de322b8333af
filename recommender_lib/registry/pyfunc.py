"""The MLflow pyfunc face of a serving bundle: batch rating prediction for (ratings, candidates).

Registered with every model version (`Registry.register_bundle`), so anyone with MLflow can
score without the API: `mlflow.pyfunc.load_model("models:/cine-reco@champion")`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

INPUT_EXAMPLE = pd.DataFrame({"ratings": [[["1", 4.5], ["2", 3.0]]], "candidates": [["3", "4"]]})


class BundlePyfunc(PythonModel):
    """Input: one row per user with `ratings` ([[title, stars], ...]) and `candidates` ([title]).

    Titles are IMDb ids (`tt0114709`) or MovieLens ids. Output: one row per input row with
    `predicted_ratings`, aligned with its candidates.
    """

    def load_context(self, context: Any) -> None:
        from recommender_lib.engine.recommender import Recommender

        self.recommender = Recommender.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        out = []
        for ratings, candidates in zip(
            model_input["ratings"], model_input["candidates"], strict=True
        ):
            pairs = [(str(ref), float(stars)) for ref, stars in ratings]
            scores = self.recommender.score(pairs, [str(c) for c in candidates])
            out.append([round(float(s), 4) for s in scores])
        return pd.DataFrame({"predicted_ratings": out})
