// Cine Reco page: search, title details + similar titles, ratings and recommendations.
// Plain JS, no framework or build step. Every API response carries `model_version`, shown in
// the footer. Scripted mode for headless browsers: `/?demo=<query>` searches, opens the first
// hit, rates it 5 and its first similar title 4, asks for recommendations, then sets
// `document.body.dataset.demo` to "done" (or "error: <message>").
"use strict";

(() => {
  const SEARCH_LIMIT = 10;
  const SIMILAR_K = 10;
  const RECOMMEND_K = 10;
  const DEBOUNCE_MS = 250;
  const STORAGE_KEY = "cine-reco-ratings";
  const STEPS = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5];

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const demoQuery = params.get("demo");
  const ratings = new Map(); // ref -> {ref, title, year, rating}
  const knownGenres = new Set();
  let currentTitle = null; // metadata of the title shown in #details
  let searchTimer = 0;
  let searchSeq = 0;
  let similarSeq = 0;

  // ------------------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => {
          if (d && typeof d === "object") {
            // this API: {field, message}; stock FastAPI: {loc, msg}
            if (d.message) return String(d.message);
            const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
            return where ? `${where}: ${d.msg}` : String(d.msg ?? JSON.stringify(d));
          }
          return String(d);
        })
        .join("; ");
    }
    return detail == null ? "" : JSON.stringify(detail);
  }

  async function api(path, options = {}) {
    const init = { headers: { Accept: "application/json" }, signal: options.signal };
    if (options.body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the server could not be reached", null);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (body && typeof body === "object" && body.model_version) {
      setModelVersion(body.model_version);
    }
    if (!response.ok) {
      let message = body ? detailText(body.detail) : "";
      if (!message) message = `${response.status} ${response.statusText}`.trim();
      if (response.status === 503) message = `service not ready: ${message}`;
      throw new ApiError(response.status, message, body);
    }
    if (!body || typeof body !== "object") {
      throw new ApiError(response.status, "the server sent no JSON", body);
    }
    return body;
  }

  function query(params) {
    const qs = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value === undefined || value === null || value === "") continue;
      if (Array.isArray(value)) {
        for (const v of value) qs.append(key, String(v));
      } else {
        qs.append(key, String(value));
      }
    }
    const text = qs.toString();
    return text ? `?${text}` : "";
  }

  // ------------------------------------------------------------------------------ helpers
  function setModelVersion(version) {
    $("model-version").textContent = String(version);
  }

  function showError(id, err) {
    const el = $(id);
    if (!err) {
      el.hidden = true;
      el.textContent = "";
      return;
    }
    el.hidden = false;
    el.textContent = `Error: ${err.message || String(err)}`;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // The list of a response: `candidates` (search), `items` (similar, recommendations).
  function listOf(body, ...keys) {
    for (const key of keys) {
      if (Array.isArray(body[key])) return body[key];
    }
    return [];
  }

  function refOf(item) {
    if (item.ref) return String(item.ref);
    if (item.tconst) return String(item.tconst);
    if (item.movie_id !== undefined && item.movie_id !== null) return String(item.movie_id);
    return null;
  }

  function label(item) {
    return item.year ? `${item.title} (${item.year})` : String(item.title);
  }

  function stars(value) {
    return `${Number(value).toFixed(1)} ★`;
  }

  function genresOf(item) {
    return Array.isArray(item.genres) ? item.genres : [];
  }

  function rememberGenres(items) {
    const list = $("genre-options");
    for (const item of items) {
      for (const g of genresOf(item)) {
        if (!knownGenres.has(g)) {
          knownGenres.add(g);
          list.append(el("option", { value: g }));
        }
      }
    }
  }

  function intOrNull(value) {
    const n = Number.parseInt(value, 10);
    return Number.isFinite(n) ? n : null;
  }

  // ------------------------------------------------------------------------------ rendering
  function ratingButtons(item) {
    const ref = refOf(item);
    const current = ratings.get(ref)?.rating;
    const group = el("div", {
      className: "rating",
      role: "group",
      "aria-label": `Rate ${label(item)}`,
    });
    for (const step of STEPS) {
      group.append(
        el(
          "button",
          {
            type: "button",
            className: step === current ? "star chosen" : "star",
            "aria-label": `${step} star${step === 1 ? "" : "s"}`,
            "aria-pressed": step === current ? "true" : "false",
            title: `${step} / 5`,
            dataset: { rating: String(step) },
            onclick: () => rate(item, step),
          },
          Number.isInteger(step) ? String(step) : `${Math.floor(step) || ""}½`,
        ),
      );
    }
    return group;
  }

  function meta(item) {
    const parts = [];
    if (item.title_type) parts.push(item.title_type);
    const genres = genresOf(item);
    if (genres.length) parts.push(genres.join(", "));
    return parts.join(" · ");
  }

  function titleItem(item, extra) {
    const ref = refOf(item);
    const li = el("li", { className: "title-item", dataset: { ref: ref ?? "" } });
    li.append(
      el(
        "button",
        {
          type: "button",
          className: "title-link",
          onclick: () => openTitle(item),
          "aria-label": `Show details of ${label(item)}`,
        },
        label(item),
      ),
      el("span", { className: "meta" }, meta(item)),
    );
    if (extra) li.append(extra);
    if (ref) li.append(ratingButtons(item));
    return li;
  }

  function renderList(id, items, extra) {
    const list = $(id);
    list.replaceChildren(...items.map((item) => titleItem(item, extra && extra(item))));
    rememberGenres(items);
  }

  function renderRatings() {
    const list = $("ratings");
    const entries = [...ratings.values()];
    list.replaceChildren(
      ...entries.map((r) =>
        el(
          "li",
          { dataset: { ref: r.ref, rating: String(r.rating) } },
          el("span", {}, `${label(r)}: ${stars(r.rating)}`),
          " ",
          el(
            "button",
            {
              type: "button",
              className: "remove",
              "aria-label": `Remove rating of ${label(r)}`,
              onclick: () => unrate(r.ref),
            },
            "Remove",
          ),
        ),
      ),
    );
    $("ratings-empty").hidden = entries.length > 0;
    if (!demoQuery) {
      try {
        localStorage.setItem(STORAGE_KEY, JSON.stringify(entries));
      } catch {
        // storage may be disabled; ratings then last for this page only
      }
    }
  }

  function refreshStars() {
    for (const group of document.querySelectorAll(".title-item")) {
      const ref = group.dataset.ref;
      const current = ratings.get(ref)?.rating;
      for (const button of group.querySelectorAll("button.star")) {
        const chosen = Number(button.dataset.rating) === current;
        button.classList.toggle("chosen", chosen);
        button.setAttribute("aria-pressed", chosen ? "true" : "false");
      }
    }
  }

  function rate(item, value) {
    const ref = refOf(item);
    if (!ref) return;
    ratings.set(ref, { ref, title: item.title, year: item.year ?? null, rating: value });
    renderRatings();
    refreshStars();
  }

  function unrate(ref) {
    ratings.delete(ref);
    renderRatings();
    refreshStars();
  }

  // ------------------------------------------------------------------------------ search
  async function search(text) {
    const q = text.trim();
    const seq = ++searchSeq;
    showError("search-error", null);
    if (!q) {
      $("search-results").replaceChildren();
      $("search-status").textContent = "";
      return [];
    }
    $("search-status").textContent = "Searching…";
    try {
      const body = await api(`titles/search${query({ q, limit: SEARCH_LIMIT })}`);
      const results = listOf(body, "candidates", "results");
      if (seq !== searchSeq) return results;
      renderList("search-results", results);
      $("search-status").textContent = results.length
        ? `${results.length} result${results.length === 1 ? "" : "s"}`
        : `No titles match “${q}”.`;
      return results;
    } catch (err) {
      if (seq === searchSeq) {
        $("search-status").textContent = "";
        showError("search-error", err);
      }
      throw err;
    }
  }

  function scheduleSearch() {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search($("search-input").value).catch(() => {}), DEBOUNCE_MS);
  }

  // ------------------------------------------------------------------------------ details
  function detailsTable(t) {
    const rows = [
      ["Type", t.title_type],
      ["Year", t.year],
      ["Genres", genresOf(t).join(", ")],
      ["Runtime", t.runtime_minutes ? `${t.runtime_minutes} min` : null],
      [
        "IMDb rating",
        t.imdb_rating != null
          ? `${Number(t.imdb_rating).toFixed(1)} (${t.imdb_votes ?? 0} votes)`
          : null,
      ],
      ["MovieLens ratings", t.movielens_ratings],
      ["IMDb id", t.tconst],
      ["MovieLens id", t.movie_id],
    ];
    const dl = el("dl", { className: "facts" });
    for (const [name, value] of rows) {
      if (value === undefined || value === null || value === "") continue;
      dl.append(el("dt", {}, name), el("dd", {}, String(value)));
    }
    return dl;
  }

  function suggestionsOf(body) {
    const list = body && Array.isArray(body.suggestions) ? body.suggestions : [];
    if (!list.length) return null;
    const p = el("p", { className: "suggestions" }, "Did you mean: ");
    list.forEach((s, i) => {
      if (i) p.append(", ");
      if (s && typeof s === "object" && refOf(s)) {
        p.append(el("button", { type: "button", onclick: () => openTitle(s) }, label(s)));
      } else {
        p.append(String(s && typeof s === "object" ? (s.title ?? JSON.stringify(s)) : s));
      }
    });
    return p;
  }

  function openTitle(item) {
    showDetails(item).catch(() => {}); // errors are rendered inline
  }

  async function showDetails(item) {
    const ref = refOf(item);
    if (!ref) return [];
    const section = $("details");
    section.hidden = false;
    showError("details-error", null);
    $("details-heading").textContent = label(item);
    $("title-details").replaceChildren(el("p", { className: "status" }, "Loading…"));
    currentTitle = item;
    const similar = loadSimilar();
    similar.catch(() => {}); // shown inline; the caller still sees the rejection
    try {
      const body = await api(`titles/${encodeURIComponent(ref)}`);
      const t = body.title ?? item;
      if (currentTitle === item) {
        currentTitle = t;
        $("details-heading").textContent = label(t);
        $("title-details").replaceChildren(detailsTable(t), ratingButtonsFor(t));
      }
    } catch (err) {
      $("title-details").replaceChildren();
      showError("details-error", err);
      const hint = suggestionsOf(err.body);
      if (hint) $("title-details").append(hint);
    }
    return similar;
  }

  function ratingButtonsFor(t) {
    const wrapper = el("div", { className: "title-item", dataset: { ref: refOf(t) ?? "" } });
    wrapper.append(ratingButtons(t));
    return el("div", { className: "rate-this" }, el("span", {}, "Your rating: "), wrapper);
  }

  function similarFilters() {
    return {
      k: SIMILAR_K,
      genres: $("similar-genre").value.trim() || null,
      title_type: $("similar-type").value || null,
      min_year: intOrNull($("similar-min-year").value),
      max_year: intOrNull($("similar-max-year").value),
    };
  }

  async function loadSimilar() {
    const item = currentTitle;
    const ref = item && refOf(item);
    if (!ref) return [];
    const seq = ++similarSeq;
    showError("similar-error", null);
    $("similar-results").replaceChildren(el("li", { className: "status" }, "Loading…"));
    try {
      const body = await api(`titles/${encodeURIComponent(ref)}/similar${query(similarFilters())}`);
      const results = listOf(body, "items", "results");
      if (seq === similarSeq) {
        renderList("similar-results", results, (r) =>
          r.similarity != null
            ? el("span", { className: "score" }, `similarity ${Number(r.similarity).toFixed(2)}`)
            : null,
        );
        if (!results.length) {
          $("similar-results").replaceChildren(
            el("li", { className: "status" }, "No similar titles within these filters."),
          );
        }
      }
      return results;
    } catch (err) {
      if (seq === similarSeq) {
        $("similar-results").replaceChildren();
        showError("similar-error", err);
      }
      throw err;
    }
  }

  // ------------------------------------------------------------------------------ recommend
  function recommendationFilters() {
    const filters = {};
    const genre = $("rec-genre").value.trim();
    if (genre) filters.genres = [genre];
    const minYear = intOrNull($("rec-min-year").value);
    const maxYear = intOrNull($("rec-max-year").value);
    if (minYear !== null) filters.min_year = minYear;
    if (maxYear !== null) filters.max_year = maxYear;
    return filters;
  }

  function explanationOf(r) {
    if (r.explanation) return String(r.explanation);
    if (r.because && typeof r.because === "object" && r.because.title) {
      return `Because you rated ${label(r.because)}`;
    }
    return "";
  }

  async function recommend() {
    showError("recommend-error", null);
    $("recommend-note").textContent = "Loading…";
    const body = {
      ratings: [...ratings.values()].map((r) => ({ title: r.ref, rating: r.rating })),
      k: RECOMMEND_K,
    };
    const filters = recommendationFilters();
    if (Object.keys(filters).length) body.filters = filters;
    try {
      const response = await api("recommendations", { body });
      const results = listOf(response, "items", "results");
      renderList("recommendations", results, (r) => {
        const box = el("span", { className: "why" });
        if (r.predicted_rating != null) {
          const text = `predicted ${stars(r.predicted_rating)}`;
          box.append(el("strong", { className: "predicted" }, text));
        }
        const why = explanationOf(r);
        if (why) box.append(" ", el("span", { className: "explanation" }, why));
        return box;
      });
      const strategy = response.strategy === "popular" ? "Most popular titles" : "Personalised";
      $("recommend-note").textContent = response.note || strategy;
      if (!results.length) {
        $("recommendations").replaceChildren(
          el("li", { className: "status" }, "No titles match these filters."),
        );
      }
      return results;
    } catch (err) {
      $("recommend-note").textContent = "";
      $("recommendations").replaceChildren();
      showError("recommend-error", err);
      throw err;
    }
  }

  // ------------------------------------------------------------------------------ startup
  async function checkService() {
    try {
      const body = await api("version");
      if (body.model_version) setModelVersion(body.model_version);
      $("service-status").textContent = "";
    } catch (err) {
      if (err.name === "AbortError") return;
      $("service-status").textContent =
        err.status === 503 ? "The model is still loading; try again shortly." : "";
    }
  }

  function restoreRatings() {
    if (demoQuery) return;
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "[]");
      for (const r of Array.isArray(saved) ? saved : []) {
        const value = Number(r.rating);
        if (r && r.ref && STEPS.includes(value)) {
          ratings.set(String(r.ref), { ...r, rating: value });
        }
      }
    } catch {
      // unreadable storage: start empty
    }
  }

  async function runDemo(q) {
    document.body.dataset.demo = "running";
    try {
      $("search-input").value = q;
      const results = await search(q);
      if (!results.length) throw new Error(`no search results for ${JSON.stringify(q)}`);
      const first = results[0];
      const similar = await showDetails(first);
      if (!similar.length) throw new Error(`no similar titles for ${label(first)}`);
      rate(first, 5);
      rate(similar[0], 4);
      const recs = await recommend();
      if (!recs.length) throw new Error("no recommendations");
      document.body.dataset.demo = "done";
    } catch (err) {
      document.body.dataset.demo = `error: ${err && err.message ? err.message : String(err)}`;
    }
  }

  function init() {
    $("search-input").addEventListener("input", scheduleSearch);
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(searchTimer);
      search($("search-input").value).catch(() => {});
    });
    $("similar-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadSimilar().catch(() => {});
    });
    $("recommend-form").addEventListener("submit", (event) => {
      event.preventDefault();
      recommend().catch(() => {});
    });
    $("clear-ratings").addEventListener("click", () => {
      ratings.clear();
      renderRatings();
      refreshStars();
    });
    restoreRatings();
    renderRatings();
    checkService();
    if (demoQuery !== null) runDemo(demoQuery);
  }

  init();
})();
