"""Localized titles, posters, placeholders and known users through the real API.

One tiny bundle trained on the sample warehouse with its generated akas, plus poster lookups
cached in the warehouse (as the TMDb enrichment stores them), served from a directory.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recommender_lib.bundle.layout import AKAS_FILE
from recommender_lib.index.localized_titles import Locale, LocalizedTitles
from recommender_lib.sources.tmdb import PosterLookup, PosterStatus
from recommender_lib.warehouse.posters import store_lookups
from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource
from tests.support.tiny_bundle import build_tiny_bundle, tiny_warehouse

IMAGES = "http://127.0.0.1:9/t/p/w342"
POSTERS = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sample_mirror: Any) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("localized")
    conn = tiny_warehouse(sample_mirror, tmp)
    linked = conn.execute(
        "SELECT c.movie_id, l.tmdb_id FROM catalog c JOIN movie_links l USING (movie_id) "
        f"WHERE l.tmdb_id IS NOT NULL ORDER BY c.movie_id LIMIT {POSTERS + 1}"
    ).fetchall()
    lookups = [PosterLookup(int(t), PosterStatus.FOUND, f"/p{m}.jpg") for m, t in linked[:-1]]
    lookups.append(PosterLookup(int(linked[-1][1]), PosterStatus.NOT_FOUND, http_status=404))
    store_lookups(conn, lookups, IMAGES)
    bundle = build_tiny_bundle(sample_mirror, tmp, conn=conn)
    store = ModelStore(DirectorySource(bundle))
    assert store.refresh() == "loaded"
    app = create_app(store, ServingSettings.from_env({"CINE_DATA_DIR": str(tmp)}), watch=False)
    posters = {str(m): f"{IMAGES}/p{m}.jpg" for m, _ in linked[:-1]}
    return {"client": TestClient(app), "bundle": bundle, "posters": posters, "app": app}


def localized_pick(served: dict[str, Any], locale: Locale) -> tuple[str, str, str]:
    """(ref, original title, localized title) of a popular title with an aka for `locale`
    that differs from its original title."""
    view = served["app"].state.store.current.view
    names = view.recommender.localized.titles_for(locale)
    for row in np.argsort(-view.recommender.catalog["popularity"].to_numpy()):
        name = names.get(int(row))
        if name and name != view.meta[row]["title"]:
            return view.meta[row]["ref"], view.meta[row]["title"], name
    pytest.fail(f"no title has a distinct localized title for {locale}")


def test_bundle_carries_the_catalogue_akas(served: dict[str, Any]) -> None:
    akas = pd.read_parquet(served["bundle"] / AKAS_FILE)
    view = served["app"].state.store.current.view
    assert len(akas) > len(view.meta)  # several akas per title
    assert set(akas["item_id"]) <= set(view.recommender.catalog["item_id"])
    scripts = "".join(akas["title"].tolist())
    assert any("\u3040" <= c <= "\u30ff" for c in scripts)  # Japanese kana
    assert any("\u0400" <= c <= "\u04ff" for c in scripts)  # Cyrillic


@pytest.mark.parametrize(("lang", "region"), [("fr", None), ("ja", None), ("de", "AT")])
def test_lang_and_region_give_the_localized_title_beside_the_original(
    served: dict[str, Any], lang: str, region: str | None
) -> None:
    client: TestClient = served["client"]
    locale = Locale.parse(lang, region)
    assert locale is not None
    ref, original, localized = localized_pick(served, locale)
    params = {"lang": lang} | ({"region": region} if region else {})
    body = client.get(f"/titles/{ref}", params=params).json()["title"]
    assert (body["title"], body["localized_title"]) == (original, localized)
    assert "localized_title" not in client.get(f"/titles/{ref}").json()["title"]


def test_accept_language_localizes_every_title_endpoint(served: dict[str, Any]) -> None:
    client: TestClient = served["client"]
    ref, original, localized = localized_pick(served, Locale("fr"))
    header = {"Accept-Language": "fr-FR;q=0.4, fr;q=0.9, en;q=0.2"}  # fr wins on q
    title = client.get(f"/titles/{ref}", headers=header)
    assert title.json()["title"]["localized_title"] == localized
    assert title.headers["vary"] == "Accept-Language"
    similar = client.get(f"/titles/{ref}/similar", params={"k": 5}, headers=header).json()
    assert similar["title"]["localized_title"] == localized
    assert all("localized_title" in item for item in similar["items"])
    assert client.get(f"/titles/{ref}/similar?k=5").json()["title"].get("localized_title") is None
    search = client.get("/titles/search", params={"q": original}, headers=header).json()
    assert all("localized_title" in c for c in search["candidates"])
    recs = client.post(
        "/recommendations", json={"ratings": [{"title": ref, "rating": 5.0}]}, headers=header
    )
    assert recs.status_code == 200 and all("localized_title" in i for i in recs.json()["items"])
    user = client.get("/movielens-users", params={"limit": 1}).json()["items"][0]["user_id"]
    mine = client.get(f"/movielens-users/{user}/recommendations", params={"lang": "ja"}).json()
    assert all("localized_title" in i for i in mine["items"])
    # explicit parameters win over the header
    explicit = client.get(f"/titles/{ref}", params={"lang": "xx"}, headers=header).json()
    assert explicit["title"]["localized_title"] is None


def test_search_matches_localized_titles(served: dict[str, Any]) -> None:
    client: TestClient = served["client"]
    ref, _, localized = localized_pick(served, Locale("ja"))
    hits = client.get("/titles/search", params={"q": localized, "lang": "ja"}).json()
    assert ref in [c["ref"] for c in hits["candidates"]]
    first = next(c for c in hits["candidates"] if c["ref"] == ref)
    assert first["localized_title"] == localized


@pytest.mark.parametrize(
    ("params", "field"), [({"lang": "français"}, "lang"), ({"region": "F_R"}, "region")]
)
def test_malformed_locale_is_a_422_naming_the_field(
    served: dict[str, Any], params: dict[str, str], field: str
) -> None:
    ref = served["app"].state.store.current.view.meta[0]["ref"]
    for path, query in (
        (f"/titles/{ref}", {}),
        (f"/titles/{ref}/similar", {}),
        ("/titles/search", {"q": "a"}),
    ):
        response = served["client"].get(path, params=query | params)
        assert response.status_code == 422, path
        assert response.json()["detail"][0]["field"] == field
    garbage = served["client"].get(f"/titles/{ref}", headers={"Accept-Language": "@@;q=x"})
    assert garbage.status_code == 200  # a header never causes an error


def test_posters_from_the_warehouse_cache_reach_the_api(served: dict[str, Any]) -> None:
    client: TestClient = served["client"]
    for ref, url in served["posters"].items():
        assert client.get(f"/titles/{ref}").json()["title"]["poster_url"] == url
    view = served["app"].state.store.current.view
    without = next(m for m in view.meta if m["ref"] not in served["posters"])
    assert client.get(f"/titles/{without['ref']}").json()["title"]["poster_url"] is None


def test_placeholder_is_an_svg_of_the_initials_in_the_genre_colour(
    served: dict[str, Any],
) -> None:
    client: TestClient = served["client"]
    view = served["app"].state.store.current.view
    meta = next(m for m in view.meta if len(m["title"].split()) > 1 and m["genres"])
    response = client.get(f"/titles/{meta['ref']}/placeholder.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert "max-age" in response.headers["cache-control"]
    svg = ElementTree.fromstring(response.content)
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.find(f"{ns}title").text == meta["title"]  # type: ignore[union-attr]
    assert svg.find(f"{ns}text").text.isupper()  # type: ignore[union-attr]
    same_genre = next(
        m for m in view.meta if m["genres"][:1] == meta["genres"][:1] and m is not meta
    )
    other = client.get(f"/titles/{same_genre['ref']}/placeholder.svg").text
    colour = response.text.split("stop-color=")[1].split('"')[1]
    assert colour in other
    assert client.get("/titles/tt0000001/placeholder.svg").status_code == 404


def test_known_users_page_through_the_release(served: dict[str, Any]) -> None:
    client: TestClient = served["client"]
    rec = served["app"].state.store.current.view.recommender
    first = client.get("/movielens-users", params={"limit": 3}).json()
    assert first["total"] == len(rec.user_ids)
    assert [u["user_id"] for u in first["items"]] == rec.user_ids[:3].tolist()
    counts = np.diff(rec.history_offsets)[:3].tolist()
    assert [u["ratings"] for u in first["items"]] == counts
    second = client.get("/movielens-users", params={"limit": 3, "offset": 3}).json()
    assert [u["user_id"] for u in second["items"]] == rec.user_ids[3:6].tolist()
    assert client.get("/movielens-users", params={"limit": 0}).status_code == 422
    # training ids from 2**60 on are application users: never a MovieLens user
    assert client.get(f"/movielens-users/{2**60}/recommendations").status_code == 422
    assert (
        client.get("/movielens-users", params={"offset": len(rec.user_ids)}).json()["items"] == []
    )


def test_bundles_without_akas_still_load(served: dict[str, Any]) -> None:
    rec = served["app"].state.store.current.view.recommender
    empty = LocalizedTitles.empty(rec.embeddings.item_ids)
    assert len(empty) == 0 and empty.titles_for(Locale("fr")) == {}
