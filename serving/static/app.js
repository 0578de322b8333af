// Cine Reco page: search, title details + similar titles, ratings, recommendations from your
// ratings or as a MovieLens user of the model, posters, in seven UI languages.
// Plain JS, no framework or build step, nothing loaded from other hosts. Every API response
// carries `model_version`, shown in the footer; every title request passes `lang` (the UI
// language), so titles come back with `localized_title` (shown first, the original second).
// Scripted mode for headless browsers: `/?demo=<query>[&lang=fr][&user=<id>]` searches, opens
// the first hit, rates it 5 and its first similar title 4, asks for recommendations and loads
// their next page, then (with `user`) shows that MovieLens user's recommendations; finally it
// sets `document.body.dataset.demo` to "done" (or "error: <message>").
"use strict";

(() => {
  const SEARCH_LIMIT = 10;
  const SIMILAR_K = 10;
  const RECOMMEND_K = 10;
  const USERS_PAGE = 50;
  const MAX_OFFSET = 400; // the API pages ranked lists up to offset 400 (serving/schemas.py)
  const DEBOUNCE_MS = 250;
  const STORAGE_KEY = "cine-reco-ratings";
  const LANG_KEY = "cine-reco-lang";
  const STEPS = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5];
  // UI languages: code (also sent to the API as `lang`) and its own name.
  const LANGUAGES = [
    ["en", "English"],
    ["fr", "Français"],
    ["de", "Deutsch"],
    ["es", "Español"],
    ["it", "Italiano"],
    ["pt-BR", "Português (Brasil)"],
    ["ja", "日本語"],
  ];
  // ------------------------------------------------------------------------------ strings
  // Every visible string of the page, by UI language (BEGIN/END MESSAGES: tests read this
  // block). `{name}` is replaced by t(); keys ending _one/_other are picked by Intl.PluralRules.
  // BEGIN MESSAGES
  const MESSAGES = {
    en: {
      appName: "Cine Reco",
      tagline: "Find titles, rate a few, get recommendations.",
      skipToSearch: "Skip to search",
      language: "Language",
      searchHeading: "Search",
      searchLabel: "Title",
      searchPlaceholder: "e.g. Toy Story",
      searchButton: "Search",
      searchHint: "Results update as you type; typos are fine.",
      searchResults: "Search results",
      searching: "Searching…",
      results_one: "{n} result",
      results_other: "{n} results",
      noMatch: "No titles match “{q}”.",
      detailsHeading: "Title",
      loading: "Loading…",
      similarHeading: "Similar titles",
      genre: "Genre",
      any: "any",
      titleType: "Type",
      fromYear: "From year",
      toYear: "To year",
      applyFilters: "Apply filters",
      loadMore: "Load more",
      noSimilar: "No similar titles within these filters.",
      similarity: "similarity {value}",
      type_movie: "movie",
      type_tvSeries: "TV series",
      type_tvMiniSeries: "TV mini-series",
      type_tvMovie: "TV movie",
      type_short: "short",
      type_video: "video",
      factType: "Type",
      factYear: "Year",
      factGenres: "Genres",
      factRuntime: "Runtime",
      factImdbRating: "IMDb rating",
      factMovielens: "MovieLens ratings",
      factImdbId: "IMDb id",
      factMovielensId: "MovieLens id",
      factOriginalTitle: "Original title",
      minutes: "{n} min",
      imdbVotes: "{rating} ({votes} votes)",
      yourRating: "Your rating:",
      rateTitle: "Rate {title}",
      stars_one: "{n} star",
      stars_other: "{n} stars",
      showDetails: "Show details of {title}",
      didYouMean: "Did you mean:",
      recoHeading: "Get recommendations",
      modeLegend: "Recommend",
      modeRatings: "from my ratings",
      modeUser: "as a MovieLens user",
      ratingsHeading: "Your ratings",
      ratingsEmpty: "Rate titles with the star buttons (½ to 5).",
      remove: "Remove",
      removeRating: "Remove rating of {title}",
      userLabel: "MovieLens user",
      userOption_one: "User {id} · {n} rating",
      userOption_other: "User {id} · {n} ratings",
      usersRange: "{from}–{to} of {total}",
      previousPage: "Previous",
      nextPage: "Next",
      usersUnavailable: "The list of MovieLens users is not available: {message}",
      noUsers: "This model knows no MovieLens users.",
      filtersLabel: "Recommendation filters",
      recommendButton: "Recommend",
      clearRatings: "Clear ratings",
      recommendationsHeading: "Recommendations",
      modeNoteRatings_one: "From your {n} rating",
      modeNoteRatings_other: "From your {n} ratings",
      modeNotePopular: "Most popular titles: rate a few to personalise.",
      modeNoteUser: "As MovieLens user {id}",
      predicted: "predicted {stars}",
      becauseYouRated: "Because you rated {title} ({stars})",
      becauseTheyRated: "Because this user rated {title}",
      matchesRatings: "Matches your ratings",
      amongPopular: "Among the most popular titles",
      noRecommendations: "No titles match these filters.",
      modelVersion: "Model version:",
      unknown: "unknown",
      error: "Error: {message}",
      errOffline: "the server could not be reached",
      errNotReady: "no model is loaded yet; try again in a few seconds",
      errBadAnswer: "the server sent an unexpected answer",
      errUnknownUser: "unknown MovieLens user {id}",
      modelLoading: "The model is still loading; try again shortly.",
      serverDown: "The server cannot be reached.",
    },
    fr: {
      appName: "Cine Reco",
      tagline: "Cherchez des titres, notez-en quelques-uns, recevez des recommandations.",
      skipToSearch: "Aller à la recherche",
      language: "Langue",
      searchHeading: "Recherche",
      searchLabel: "Titre",
      searchPlaceholder: "p. ex. Toy Story",
      searchButton: "Rechercher",
      searchHint: "Les résultats s’actualisent pendant la saisie ; les fautes de frappe sont tolérées.",
      searchResults: "Résultats de recherche",
      searching: "Recherche…",
      results_one: "{n} résultat",
      results_other: "{n} résultats",
      noMatch: "Aucun titre ne correspond à « {q} ».",
      detailsHeading: "Titre",
      loading: "Chargement…",
      similarHeading: "Titres similaires",
      genre: "Genre",
      any: "tous",
      titleType: "Type",
      fromYear: "De l’année",
      toYear: "À l’année",
      applyFilters: "Appliquer les filtres",
      loadMore: "Afficher plus",
      noSimilar: "Aucun titre similaire avec ces filtres.",
      similarity: "similarité {value}",
      type_movie: "film",
      type_tvSeries: "série TV",
      type_tvMiniSeries: "mini-série TV",
      type_tvMovie: "téléfilm",
      type_short: "court métrage",
      type_video: "vidéo",
      factType: "Type",
      factYear: "Année",
      factGenres: "Genres",
      factRuntime: "Durée",
      factImdbRating: "Note IMDb",
      factMovielens: "Notes MovieLens",
      factImdbId: "Identifiant IMDb",
      factMovielensId: "Identifiant MovieLens",
      factOriginalTitle: "Titre original",
      minutes: "{n} min",
      imdbVotes: "{rating} ({votes} votes)",
      yourRating: "Votre note :",
      rateTitle: "Noter {title}",
      stars_one: "{n} étoile",
      stars_other: "{n} étoiles",
      showDetails: "Afficher les détails de {title}",
      didYouMean: "Vouliez-vous dire :",
      recoHeading: "Obtenir des recommandations",
      modeLegend: "Recommander",
      modeRatings: "à partir de mes notes",
      modeUser: "comme un utilisateur MovieLens",
      ratingsHeading: "Vos notes",
      ratingsEmpty: "Notez des titres avec les boutons étoiles (½ à 5).",
      remove: "Retirer",
      removeRating: "Retirer la note de {title}",
      userLabel: "Utilisateur MovieLens",
      userOption_one: "Utilisateur {id} · {n} note",
      userOption_other: "Utilisateur {id} · {n} notes",
      usersRange: "{from}–{to} sur {total}",
      previousPage: "Précédents",
      nextPage: "Suivants",
      usersUnavailable: "La liste des utilisateurs MovieLens n’est pas disponible : {message}",
      noUsers: "Ce modèle ne connaît aucun utilisateur MovieLens.",
      filtersLabel: "Filtres des recommandations",
      recommendButton: "Recommander",
      clearRatings: "Effacer les notes",
      recommendationsHeading: "Recommandations",
      modeNoteRatings_one: "D’après votre note",
      modeNoteRatings_other: "D’après vos {n} notes",
      modeNotePopular: "Titres les plus populaires : notez-en quelques-uns pour personnaliser.",
      modeNoteUser: "En tant qu’utilisateur MovieLens {id}",
      predicted: "note prévue {stars}",
      becauseYouRated: "Parce que vous avez noté {title} ({stars})",
      becauseTheyRated: "Parce que cet utilisateur a noté {title}",
      matchesRatings: "Correspond à vos notes",
      amongPopular: "Parmi les titres les plus populaires",
      noRecommendations: "Aucun titre ne correspond à ces filtres.",
      modelVersion: "Version du modèle :",
      unknown: "inconnue",
      error: "Erreur : {message}",
      errOffline: "le serveur est injoignable",
      errNotReady: "aucun modèle n’est encore chargé ; réessayez dans quelques secondes",
      errBadAnswer: "le serveur a envoyé une réponse inattendue",
      errUnknownUser: "utilisateur MovieLens {id} inconnu",
      modelLoading: "Le modèle est en cours de chargement ; réessayez bientôt.",
      serverDown: "Le serveur est injoignable.",
    },
    de: {
      appName: "Cine Reco",
      tagline: "Titel finden, ein paar bewerten, Empfehlungen erhalten.",
      skipToSearch: "Zur Suche springen",
      language: "Sprache",
      searchHeading: "Suche",
      searchLabel: "Titel",
      searchPlaceholder: "z. B. Toy Story",
      searchButton: "Suchen",
      searchHint: "Die Ergebnisse aktualisieren sich beim Tippen; Tippfehler sind kein Problem.",
      searchResults: "Suchergebnisse",
      searching: "Suche läuft…",
      results_one: "{n} Ergebnis",
      results_other: "{n} Ergebnisse",
      noMatch: "Kein Titel passt zu „{q}“.",
      detailsHeading: "Titel",
      loading: "Wird geladen…",
      similarHeading: "Ähnliche Titel",
      genre: "Genre",
      any: "alle",
      titleType: "Art",
      fromYear: "Ab Jahr",
      toYear: "Bis Jahr",
      applyFilters: "Filter anwenden",
      loadMore: "Mehr laden",
      noSimilar: "Keine ähnlichen Titel mit diesen Filtern.",
      similarity: "Ähnlichkeit {value}",
      type_movie: "Film",
      type_tvSeries: "Fernsehserie",
      type_tvMiniSeries: "Miniserie",
      type_tvMovie: "Fernsehfilm",
      type_short: "Kurzfilm",
      type_video: "Video",
      factType: "Art",
      factYear: "Jahr",
      factGenres: "Genres",
      factRuntime: "Laufzeit",
      factImdbRating: "IMDb-Bewertung",
      factMovielens: "MovieLens-Bewertungen",
      factImdbId: "IMDb-ID",
      factMovielensId: "MovieLens-ID",
      factOriginalTitle: "Originaltitel",
      minutes: "{n} Min.",
      imdbVotes: "{rating} ({votes} Stimmen)",
      yourRating: "Ihre Bewertung:",
      rateTitle: "{title} bewerten",
      stars_one: "{n} Stern",
      stars_other: "{n} Sterne",
      showDetails: "Details zu {title} anzeigen",
      didYouMean: "Meinten Sie:",
      recoHeading: "Empfehlungen erhalten",
      modeLegend: "Empfehlen",
      modeRatings: "nach meinen Bewertungen",
      modeUser: "als MovieLens-Nutzer",
      ratingsHeading: "Ihre Bewertungen",
      ratingsEmpty: "Bewerten Sie Titel mit den Sternknöpfen (½ bis 5).",
      remove: "Entfernen",
      removeRating: "Bewertung von {title} entfernen",
      userLabel: "MovieLens-Nutzer",
      userOption_one: "Nutzer {id} · {n} Bewertung",
      userOption_other: "Nutzer {id} · {n} Bewertungen",
      usersRange: "{from}–{to} von {total}",
      previousPage: "Zurück",
      nextPage: "Weiter",
      usersUnavailable: "Die Liste der MovieLens-Nutzer ist nicht verfügbar: {message}",
      noUsers: "Dieses Modell kennt keine MovieLens-Nutzer.",
      filtersLabel: "Filter für Empfehlungen",
      recommendButton: "Empfehlen",
      clearRatings: "Bewertungen löschen",
      recommendationsHeading: "Empfehlungen",
      modeNoteRatings_one: "Nach Ihrer Bewertung",
      modeNoteRatings_other: "Nach Ihren {n} Bewertungen",
      modeNotePopular: "Beliebteste Titel: Bewerten Sie ein paar, um zu personalisieren.",
      modeNoteUser: "Als MovieLens-Nutzer {id}",
      predicted: "erwartet {stars}",
      becauseYouRated: "Weil Sie {title} bewertet haben ({stars})",
      becauseTheyRated: "Weil dieser Nutzer {title} bewertet hat",
      matchesRatings: "Passt zu Ihren Bewertungen",
      amongPopular: "Unter den beliebtesten Titeln",
      noRecommendations: "Keine Titel passen zu diesen Filtern.",
      modelVersion: "Modellversion:",
      unknown: "unbekannt",
      error: "Fehler: {message}",
      errOffline: "der Server ist nicht erreichbar",
      errNotReady: "noch ist kein Modell geladen; versuchen Sie es in ein paar Sekunden erneut",
      errBadAnswer: "der Server hat eine unerwartete Antwort gesendet",
      errUnknownUser: "unbekannter MovieLens-Nutzer {id}",
      modelLoading: "Das Modell wird noch geladen; bitte gleich erneut versuchen.",
      serverDown: "Der Server ist nicht erreichbar.",
    },
    es: {
      appName: "Cine Reco",
      tagline: "Busca títulos, puntúa algunos y recibe recomendaciones.",
      skipToSearch: "Ir a la búsqueda",
      language: "Idioma",
      searchHeading: "Búsqueda",
      searchLabel: "Título",
      searchPlaceholder: "p. ej. Toy Story",
      searchButton: "Buscar",
      searchHint: "Los resultados se actualizan mientras escribes; se toleran las erratas.",
      searchResults: "Resultados de búsqueda",
      searching: "Buscando…",
      results_one: "{n} resultado",
      results_other: "{n} resultados",
      noMatch: "Ningún título coincide con «{q}».",
      detailsHeading: "Título",
      loading: "Cargando…",
      similarHeading: "Títulos similares",
      genre: "Género",
      any: "cualquiera",
      titleType: "Tipo",
      fromYear: "Desde el año",
      toYear: "Hasta el año",
      applyFilters: "Aplicar filtros",
      loadMore: "Cargar más",
      noSimilar: "No hay títulos similares con estos filtros.",
      similarity: "similitud {value}",
      type_movie: "película",
      type_tvSeries: "serie de TV",
      type_tvMiniSeries: "miniserie de TV",
      type_tvMovie: "película para TV",
      type_short: "cortometraje",
      type_video: "vídeo",
      factType: "Tipo",
      factYear: "Año",
      factGenres: "Géneros",
      factRuntime: "Duración",
      factImdbRating: "Puntuación IMDb",
      factMovielens: "Valoraciones MovieLens",
      factImdbId: "ID de IMDb",
      factMovielensId: "ID de MovieLens",
      factOriginalTitle: "Título original",
      minutes: "{n} min",
      imdbVotes: "{rating} ({votes} votos)",
      yourRating: "Tu puntuación:",
      rateTitle: "Puntuar {title}",
      stars_one: "{n} estrella",
      stars_other: "{n} estrellas",
      showDetails: "Ver detalles de {title}",
      didYouMean: "Quizá quisiste decir:",
      recoHeading: "Obtener recomendaciones",
      modeLegend: "Recomendar",
      modeRatings: "a partir de mis puntuaciones",
      modeUser: "como un usuario de MovieLens",
      ratingsHeading: "Tus puntuaciones",
      ratingsEmpty: "Puntúa títulos con los botones de estrellas (½ a 5).",
      remove: "Quitar",
      removeRating: "Quitar la puntuación de {title}",
      userLabel: "Usuario de MovieLens",
      userOption_one: "Usuario {id} · {n} valoración",
      userOption_other: "Usuario {id} · {n} valoraciones",
      usersRange: "{from}–{to} de {total}",
      previousPage: "Anteriores",
      nextPage: "Siguientes",
      usersUnavailable: "La lista de usuarios de MovieLens no está disponible: {message}",
      noUsers: "Este modelo no conoce usuarios de MovieLens.",
      filtersLabel: "Filtros de recomendaciones",
      recommendButton: "Recomendar",
      clearRatings: "Borrar puntuaciones",
      recommendationsHeading: "Recomendaciones",
      modeNoteRatings_one: "A partir de tu puntuación",
      modeNoteRatings_other: "A partir de tus {n} puntuaciones",
      modeNotePopular: "Títulos más populares: puntúa algunos para personalizar.",
      modeNoteUser: "Como el usuario de MovieLens {id}",
      predicted: "prevista {stars}",
      becauseYouRated: "Porque puntuaste {title} ({stars})",
      becauseTheyRated: "Porque este usuario valoró {title}",
      matchesRatings: "Encaja con tus puntuaciones",
      amongPopular: "Entre los títulos más populares",
      noRecommendations: "Ningún título coincide con estos filtros.",
      modelVersion: "Versión del modelo:",
      unknown: "desconocida",
      error: "Error: {message}",
      errOffline: "no se puede contactar con el servidor",
      errNotReady: "todavía no hay ningún modelo cargado; inténtalo de nuevo en unos segundos",
      errBadAnswer: "el servidor envió una respuesta inesperada",
      errUnknownUser: "usuario de MovieLens {id} desconocido",
      modelLoading: "El modelo aún se está cargando; inténtalo de nuevo en breve.",
      serverDown: "No se puede contactar con el servidor.",
    },
    it: {
      appName: "Cine Reco",
      tagline: "Cerca titoli, valutane alcuni, ricevi consigli.",
      skipToSearch: "Vai alla ricerca",
      language: "Lingua",
      searchHeading: "Ricerca",
      searchLabel: "Titolo",
      searchPlaceholder: "ad es. Toy Story",
      searchButton: "Cerca",
      searchHint: "I risultati si aggiornano mentre scrivi; gli errori di battitura sono tollerati.",
      searchResults: "Risultati della ricerca",
      searching: "Ricerca in corso…",
      results_one: "{n} risultato",
      results_other: "{n} risultati",
      noMatch: "Nessun titolo corrisponde a «{q}».",
      detailsHeading: "Titolo",
      loading: "Caricamento…",
      similarHeading: "Titoli simili",
      genre: "Genere",
      any: "qualsiasi",
      titleType: "Tipo",
      fromYear: "Dall’anno",
      toYear: "All’anno",
      applyFilters: "Applica filtri",
      loadMore: "Carica altri",
      noSimilar: "Nessun titolo simile con questi filtri.",
      similarity: "somiglianza {value}",
      type_movie: "film",
      type_tvSeries: "serie TV",
      type_tvMiniSeries: "miniserie TV",
      type_tvMovie: "film TV",
      type_short: "cortometraggio",
      type_video: "video",
      factType: "Tipo",
      factYear: "Anno",
      factGenres: "Generi",
      factRuntime: "Durata",
      factImdbRating: "Voto IMDb",
      factMovielens: "Valutazioni MovieLens",
      factImdbId: "ID IMDb",
      factMovielensId: "ID MovieLens",
      factOriginalTitle: "Titolo originale",
      minutes: "{n} min",
      imdbVotes: "{rating} ({votes} voti)",
      yourRating: "Il tuo voto:",
      rateTitle: "Valuta {title}",
      stars_one: "{n} stella",
      stars_other: "{n} stelle",
      showDetails: "Mostra i dettagli di {title}",
      didYouMean: "Forse cercavi:",
      recoHeading: "Ricevi consigli",
      modeLegend: "Consiglia",
      modeRatings: "in base ai miei voti",
      modeUser: "come un utente MovieLens",
      ratingsHeading: "I tuoi voti",
      ratingsEmpty: "Valuta i titoli con i pulsanti a stella (da ½ a 5).",
      remove: "Rimuovi",
      removeRating: "Rimuovi il voto di {title}",
      userLabel: "Utente MovieLens",
      userOption_one: "Utente {id} · {n} valutazione",
      userOption_other: "Utente {id} · {n} valutazioni",
      usersRange: "{from}–{to} di {total}",
      previousPage: "Precedenti",
      nextPage: "Successivi",
      usersUnavailable: "L’elenco degli utenti MovieLens non è disponibile: {message}",
      noUsers: "Questo modello non conosce utenti MovieLens.",
      filtersLabel: "Filtri dei consigli",
      recommendButton: "Consiglia",
      clearRatings: "Cancella i voti",
      recommendationsHeading: "Consigli",
      modeNoteRatings_one: "In base al tuo voto",
      modeNoteRatings_other: "In base ai tuoi {n} voti",
      modeNotePopular: "Titoli più popolari: valutane alcuni per personalizzare.",
      modeNoteUser: "Come utente MovieLens {id}",
      predicted: "previsto {stars}",
      becauseYouRated: "Perché hai valutato {title} ({stars})",
      becauseTheyRated: "Perché questo utente ha valutato {title}",
      matchesRatings: "In linea con i tuoi voti",
      amongPopular: "Tra i titoli più popolari",
      noRecommendations: "Nessun titolo corrisponde a questi filtri.",
      modelVersion: "Versione del modello:",
      unknown: "sconosciuta",
      error: "Errore: {message}",
      errOffline: "il server non è raggiungibile",
      errNotReady: "nessun modello è ancora caricato; riprova tra qualche secondo",
      errBadAnswer: "il server ha inviato una risposta inattesa",
      errUnknownUser: "utente MovieLens {id} sconosciuto",
      modelLoading: "Il modello è ancora in caricamento; riprova a breve.",
      serverDown: "Il server non è raggiungibile.",
    },
    "pt-BR": {
      appName: "Cine Reco",
      tagline: "Encontre títulos, avalie alguns e receba recomendações.",
      skipToSearch: "Ir para a busca",
      language: "Idioma",
      searchHeading: "Busca",
      searchLabel: "Título",
      searchPlaceholder: "ex.: Toy Story",
      searchButton: "Buscar",
      searchHint: "Os resultados mudam enquanto você digita; erros de digitação são aceitos.",
      searchResults: "Resultados da busca",
      searching: "Buscando…",
      results_one: "{n} resultado",
      results_other: "{n} resultados",
      noMatch: "Nenhum título corresponde a “{q}”.",
      detailsHeading: "Título",
      loading: "Carregando…",
      similarHeading: "Títulos semelhantes",
      genre: "Gênero",
      any: "qualquer",
      titleType: "Tipo",
      fromYear: "A partir do ano",
      toYear: "Até o ano",
      applyFilters: "Aplicar filtros",
      loadMore: "Carregar mais",
      noSimilar: "Nenhum título semelhante com esses filtros.",
      similarity: "semelhança {value}",
      type_movie: "filme",
      type_tvSeries: "série de TV",
      type_tvMiniSeries: "minissérie de TV",
      type_tvMovie: "filme para TV",
      type_short: "curta-metragem",
      type_video: "vídeo",
      factType: "Tipo",
      factYear: "Ano",
      factGenres: "Gêneros",
      factRuntime: "Duração",
      factImdbRating: "Nota no IMDb",
      factMovielens: "Avaliações no MovieLens",
      factImdbId: "ID no IMDb",
      factMovielensId: "ID no MovieLens",
      factOriginalTitle: "Título original",
      minutes: "{n} min",
      imdbVotes: "{rating} ({votes} votos)",
      yourRating: "Sua nota:",
      rateTitle: "Avaliar {title}",
      stars_one: "{n} estrela",
      stars_other: "{n} estrelas",
      showDetails: "Mostrar detalhes de {title}",
      didYouMean: "Você quis dizer:",
      recoHeading: "Receber recomendações",
      modeLegend: "Recomendar",
      modeRatings: "a partir das minhas notas",
      modeUser: "como um usuário do MovieLens",
      ratingsHeading: "Suas notas",
      ratingsEmpty: "Avalie títulos com os botões de estrela (½ a 5).",
      remove: "Remover",
      removeRating: "Remover a nota de {title}",
      userLabel: "Usuário do MovieLens",
      userOption_one: "Usuário {id} · {n} avaliação",
      userOption_other: "Usuário {id} · {n} avaliações",
      usersRange: "{from}–{to} de {total}",
      previousPage: "Anteriores",
      nextPage: "Próximos",
      usersUnavailable: "A lista de usuários do MovieLens não está disponível: {message}",
      noUsers: "Este modelo não conhece usuários do MovieLens.",
      filtersLabel: "Filtros das recomendações",
      recommendButton: "Recomendar",
      clearRatings: "Limpar notas",
      recommendationsHeading: "Recomendações",
      modeNoteRatings_one: "A partir da sua nota",
      modeNoteRatings_other: "A partir das suas {n} notas",
      modeNotePopular: "Títulos mais populares: avalie alguns para personalizar.",
      modeNoteUser: "Como o usuário do MovieLens {id}",
      predicted: "prevista {stars}",
      becauseYouRated: "Porque você avaliou {title} ({stars})",
      becauseTheyRated: "Porque este usuário avaliou {title}",
      matchesRatings: "Combina com suas notas",
      amongPopular: "Entre os títulos mais populares",
      noRecommendations: "Nenhum título corresponde a esses filtros.",
      modelVersion: "Versão do modelo:",
      unknown: "desconhecida",
      error: "Erro: {message}",
      errOffline: "não foi possível contatar o servidor",
      errNotReady: "nenhum modelo foi carregado ainda; tente novamente em alguns segundos",
      errBadAnswer: "o servidor enviou uma resposta inesperada",
      errUnknownUser: "usuário do MovieLens {id} desconhecido",
      modelLoading: "O modelo ainda está carregando; tente novamente em instantes.",
      serverDown: "Não foi possível contatar o servidor.",
    },
    ja: {
      appName: "Cine Reco",
      tagline: "作品を探して、いくつか評価し、おすすめを受け取りましょう。",
      skipToSearch: "検索へ移動",
      language: "言語",
      searchHeading: "検索",
      searchLabel: "タイトル",
      searchPlaceholder: "例: Toy Story",
      searchButton: "検索",
      searchHint: "入力に合わせて結果が更新されます。多少の入力ミスは問題ありません。",
      searchResults: "検索結果",
      searching: "検索中…",
      results_other: "{n} 件の結果",
      noMatch: "「{q}」に一致する作品はありません。",
      detailsHeading: "作品",
      loading: "読み込み中…",
      similarHeading: "似ている作品",
      genre: "ジャンル",
      any: "すべて",
      titleType: "種類",
      fromYear: "開始年",
      toYear: "終了年",
      applyFilters: "絞り込む",
      loadMore: "さらに表示",
      noSimilar: "この条件に合う似ている作品はありません。",
      similarity: "類似度 {value}",
      type_movie: "映画",
      type_tvSeries: "テレビシリーズ",
      type_tvMiniSeries: "テレビミニシリーズ",
      type_tvMovie: "テレビ映画",
      type_short: "短編",
      type_video: "ビデオ",
      factType: "種類",
      factYear: "公開年",
      factGenres: "ジャンル",
      factRuntime: "上映時間",
      factImdbRating: "IMDb 評価",
      factMovielens: "MovieLens の評価数",
      factImdbId: "IMDb ID",
      factMovielensId: "MovieLens ID",
      factOriginalTitle: "原題",
      minutes: "{n} 分",
      imdbVotes: "{rating}（{votes} 票）",
      yourRating: "あなたの評価:",
      rateTitle: "{title} を評価",
      stars_other: "星 {n}",
      showDetails: "{title} の詳細を表示",
      didYouMean: "もしかして:",
      recoHeading: "おすすめを見る",
      modeLegend: "おすすめの基準",
      modeRatings: "自分の評価から",
      modeUser: "MovieLens ユーザーとして",
      ratingsHeading: "あなたの評価",
      ratingsEmpty: "星ボタン（½〜5）で作品を評価してください。",
      remove: "削除",
      removeRating: "{title} の評価を削除",
      userLabel: "MovieLens ユーザー",
      userOption_other: "ユーザー {id}・評価 {n} 件",
      usersRange: "{total} 人中 {from}–{to}",
      previousPage: "前へ",
      nextPage: "次へ",
      usersUnavailable: "MovieLens ユーザーの一覧を取得できません: {message}",
      noUsers: "このモデルには MovieLens ユーザーがいません。",
      filtersLabel: "おすすめの絞り込み",
      recommendButton: "おすすめを表示",
      clearRatings: "評価をクリア",
      recommendationsHeading: "おすすめ",
      modeNoteRatings_other: "あなたの {n} 件の評価から",
      modeNotePopular: "人気の作品です。いくつか評価するとあなた向けになります。",
      modeNoteUser: "MovieLens ユーザー {id} として",
      predicted: "予測 {stars}",
      becauseYouRated: "{title} を評価したため（{stars}）",
      becauseTheyRated: "このユーザーが {title} を評価したため",
      matchesRatings: "あなたの評価に合っています",
      amongPopular: "特に人気のある作品",
      noRecommendations: "この条件に合う作品はありません。",
      modelVersion: "モデルのバージョン:",
      unknown: "不明",
      error: "エラー: {message}",
      errOffline: "サーバーに接続できません",
      errNotReady: "モデルがまだ読み込まれていません。数秒後にもう一度お試しください",
      errBadAnswer: "サーバーから予期しない応答がありました",
      errUnknownUser: "MovieLens ユーザー {id} は存在しません",
      modelLoading: "モデルを読み込み中です。しばらくしてからもう一度お試しください。",
      serverDown: "サーバーに接続できません。",
    },
  };
  // END MESSAGES

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const demoQuery = params.get("demo");
  const ratings = new Map(); // ref -> {ref, title, localized_title, year, rating}
  const knownGenres = new Set();
  let uiLang = "en";
  let currentTitle = null; // metadata of the title shown in #details
  let searchTimer = 0;
  let searchSeq = 0;
  let similarSeq = 0;
  let recommendSeq = 0;
  let mode = "ratings"; // which recommendations: "ratings" (yours) or "user" (a MovieLens user)
  let users = null; // the page of /movielens-users shown in the picker: {offset, total, items}
  const similarPage = { offset: 0, filters: null };
  let recommendRequest = null; // {mode, fetch(offset)} of the list in #recommendations
  let recommendOffset = 0;

  // ------------------------------------------------------------------------------ i18n
  function pick(lang) {
    if (!lang) return null;
    const wanted = String(lang).toLowerCase();
    const codes = LANGUAGES.map(([code]) => code);
    return (
      codes.find((c) => c.toLowerCase() === wanted) ??
      codes.find((c) => c.split("-")[0].toLowerCase() === wanted.split("-")[0]) ??
      null
    );
  }

  function initialLanguage() {
    const fromUrl = pick(params.get("lang"));
    if (fromUrl) return fromUrl;
    try {
      const saved = pick(localStorage.getItem(LANG_KEY));
      if (saved) return saved;
    } catch {
      // storage disabled: fall through
    }
    for (const lang of navigator.languages || []) {
      const found = pick(lang);
      if (found) return found;
    }
    return "en";
  }

  // The string `key` in the UI language (English when missing); `{name}` from `vars`.
  function t(key, vars = {}) {
    const table = MESSAGES[uiLang] || MESSAGES.en;
    let name = key;
    if (typeof vars.n === "number") {
      const forms = [`${key}_${new Intl.PluralRules(uiLang).select(vars.n)}`, `${key}_other`];
      name = forms.find((form) => form in table || form in MESSAGES.en) ?? key;
    }
    const text = table[name] ?? MESSAGES.en[name] ?? key;
    return text.replace(/\{(\w+)\}/g, (all, v) => (v in vars ? fmtVar(vars[v]) : all));
  }

  function fmtVar(value) {
    return typeof value === "number" && !Number.isInteger(value) ? num(value, 1) : String(value);
  }

  function num(value, digits) {
    return new Intl.NumberFormat(uiLang, {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    }).format(Number(value));
  }

  // Static strings: `data-i18n` (text), `data-i18n-<attr>` (placeholder, aria-label, title).
  function applyStaticStrings() {
    document.documentElement.lang = uiLang;
    document.title = t("appName");
    for (const node of document.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.dataset.i18n);
    }
    for (const attr of ["placeholder", "aria-label", "title"]) {
      const data = `i18n${attr.replace(/(^|-)(\w)/g, (_, __, c) => c.toUpperCase())}`;
      for (const node of document.querySelectorAll(`[data-i18n-${attr}]`)) {
        node.setAttribute(attr, t(node.dataset[data]));
      }
    }
    if (!$("model-version").dataset.version) $("model-version").textContent = t("unknown");
  }

  // Switch the UI language; `remember` stores the choice for the next visit.
  function setLanguage(code, remember) {
    uiLang = code;
    $("language").value = code;
    if (remember && !demoQuery) {
      try {
        localStorage.setItem(LANG_KEY, code);
      } catch {
        // not remembered
      }
    }
    applyStaticStrings();
  }

  // Everything on screen again in the new language (titles come localized from the API).
  function changeLanguage(code) {
    setLanguage(code, true);
    renderRatings();
    renderUsers();
    const q = $("search-input").value;
    if (q.trim()) search(q).catch(() => {});
    if (currentTitle && !$("details").hidden) openTitle(currentTitle);
    if (recommendRequest) showRecommendations(recommendRequest.mode).catch(() => {});
  }

  // ------------------------------------------------------------------------------ API
  class ApiError extends Error {
    // kind: "offline" | "notReady" | "badAnswer" | "http" (message: the server's detail)
    constructor(kind, status, message, body) {
      super(message);
      this.kind = kind;
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
            if (d.message) return d.field ? `${d.field}: ${d.message}` : String(d.message);
            const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
            return where ? `${where}: ${d.msg}` : String(d.msg ?? JSON.stringify(d));
          }
          return String(d);
        })
        .join("; ");
    }
    return detail == null ? "" : JSON.stringify(detail);
  }

  // `path` relative to the page, with the UI language added to the query string.
  async function api(path, options = {}) {
    const sep = path.includes("?") ? "&" : "?";
    const url = `${path}${sep}lang=${encodeURIComponent(uiLang)}`;
    const init = { headers: { Accept: "application/json" } };
    if (options.body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch {
      throw new ApiError("offline", 0, "", null);
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
      const detail = body ? detailText(body.detail) : "";
      const kind = response.status === 503 ? "notReady" : "http";
      throw new ApiError(kind, response.status, detail || `HTTP ${response.status}`, body);
    }
    if (!body || typeof body !== "object") throw new ApiError("badAnswer", response.status, "", body);
    return body;
  }

  function query(values) {
    const qs = new URLSearchParams();
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined || value === null || value === "") continue;
      qs.append(key, String(value));
    }
    const text = qs.toString();
    return text ? `?${text}` : "";
  }

  function errorText(err) {
    if (err instanceof ApiError) {
      if (err.kind === "offline") return t("error", { message: t("errOffline") });
      if (err.kind === "notReady") return t("error", { message: t("errNotReady") });
      if (err.kind === "badAnswer") return t("error", { message: t("errBadAnswer") });
    }
    return t("error", { message: err && err.message ? err.message : String(err) });
  }

  // ------------------------------------------------------------------------------ helpers
  function setModelVersion(version) {
    const node = $("model-version");
    node.dataset.version = String(version);
    node.textContent = String(version);
  }

  function showError(id, err, text) {
    const node = $(id);
    node.hidden = !err;
    node.textContent = err ? (text ?? errorText(err)) : "";
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

  // The title to show first: the localized one when the API has one for this language.
  function shownTitle(item) {
    return item.localized_title ? String(item.localized_title) : String(item.title);
  }

  function label(item) {
    return item.year ? `${shownTitle(item)} (${item.year})` : shownTitle(item);
  }

  function stars(value) {
    return `${num(value, 1)} ★`;
  }

  function genresOf(item) {
    return Array.isArray(item.genres) ? item.genres : [];
  }

  function typeName(type) {
    const key = `type_${type}`;
    return key in MESSAGES.en ? t(key) : String(type);
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
  function placeholderUrl(item) {
    return `titles/${encodeURIComponent(refOf(item) ?? "")}/placeholder.svg`;
  }

  function initials(text) {
    const words = String(text).match(/[\p{L}\p{N}]+/gu) || ["?"];
    return words
      .slice(0, 2)
      .map((w) => w[0].toUpperCase())
      .join("");
  }

  // A poster: the TMDb image, else (or when it fails to load) the API's SVG placeholder, else
  // (an API without placeholders) a box with the title's initials.
  function poster(item, large = false) {
    const fallback = placeholderUrl(item);
    const img = el("img", {
      className: large ? "poster poster-large" : "poster",
      src: item.poster_url || fallback,
      alt: String(item.title),
      loading: large ? "eager" : "lazy",
      decoding: "async",
      width: large ? 200 : 92,
      height: large ? 300 : 138,
    });
    img.addEventListener("error", () => {
      if (img.getAttribute("src") !== fallback) {
        img.src = fallback;
        return;
      }
      const box = el(
        "span",
        { className: img.className + " poster-fallback", role: "img", "aria-label": item.title },
        initials(shownTitle(item)),
      );
      img.replaceWith(box);
    });
    return img;
  }

  // The localized title (marked with the UI language) and the original one as secondary text.
  function titleText(item) {
    const year = item.year ? el("span", { className: "year" }, ` (${item.year})`) : null;
    const localized = item.localized_title && item.localized_title !== item.title;
    if (!localized) return [el("span", { className: "title-text" }, String(item.title)), year];
    return [
      el("span", { className: "title-text localized-title", lang: uiLang }, item.localized_title),
      year,
      el("span", { className: "original-title" }, String(item.title)),
    ];
  }

  function ratingButtons(item) {
    const ref = refOf(item);
    const current = ratings.get(ref)?.rating;
    const group = el("div", {
      className: "rating",
      role: "group",
      "aria-label": t("rateTitle", { title: label(item) }),
    });
    for (const step of STEPS) {
      group.append(
        el(
          "button",
          {
            type: "button",
            className: step === current ? "star chosen" : "star",
            "aria-label": t("stars", { n: step }),
            "aria-pressed": step === current ? "true" : "false",
            title: `${num(step, Number.isInteger(step) ? 0 : 1)} / 5`,
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
    if (item.title_type) parts.push(typeName(item.title_type));
    const genres = genresOf(item);
    if (genres.length) parts.push(genres.join(", "));
    return parts.join(" · ");
  }

  function titleItem(item, extra) {
    const ref = refOf(item);
    const body = el(
      "div",
      { className: "card-body" },
      el(
        "button",
        {
          type: "button",
          className: "title-link",
          onclick: () => openTitle(item),
          "aria-label": t("showDetails", { title: label(item) }),
        },
        titleText(item),
      ),
      el("span", { className: "meta" }, meta(item)),
      extra || null,
      ref ? ratingButtons(item) : null,
    );
    return el("li", { className: "title-item card", dataset: { ref: ref ?? "" } }, poster(item), body);
  }

  // Replace (or with `append`, extend) a list; titles already listed are not repeated.
  function renderList(id, items, extra, append = false) {
    const list = $(id);
    if (!append) list.replaceChildren();
    const shown = new Set([...list.querySelectorAll(".title-item")].map((li) => li.dataset.ref));
    const fresh = items.filter((item) => !shown.has(refOf(item) ?? ""));
    list.append(...fresh.map((item) => titleItem(item, extra && extra(item))));
    rememberGenres(items);
  }

  function emptyState(id, key) {
    $(id).replaceChildren(el("li", { className: "status empty" }, t(key)));
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
              "aria-label": t("removeRating", { title: label(r) }),
              onclick: () => unrate(r.ref),
            },
            t("remove"),
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
    const localized = item.localized_title ?? null;
    const entry = { ref, title: item.title, localized_title: localized, year: item.year ?? null };
    ratings.set(ref, { ...entry, rating: value });
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
    $("search-status").textContent = t("searching");
    try {
      const body = await api(`titles/search${query({ q, limit: SEARCH_LIMIT })}`);
      const results = listOf(body, "candidates", "results");
      if (seq !== searchSeq) return results;
      renderList("search-results", results);
      $("search-status").textContent = results.length
        ? t("results", { n: results.length })
        : t("noMatch", { q });
      return results;
    } catch (err) {
      if (seq === searchSeq) {
        $("search-status").textContent = "";
        $("search-results").replaceChildren();
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
  function detailsTable(item) {
    const localized = item.localized_title && item.localized_title !== item.title;
    const imdb =
      item.imdb_rating != null
        ? t("imdbVotes", { rating: num(item.imdb_rating, 1), votes: num(item.imdb_votes ?? 0, 0) })
        : null;
    const rows = [
      ["factOriginalTitle", localized ? item.title : null],
      ["factType", item.title_type ? typeName(item.title_type) : null],
      ["factYear", item.year],
      ["factGenres", genresOf(item).join(", ")],
      ["factRuntime", item.runtime_minutes ? t("minutes", { n: item.runtime_minutes }) : null],
      ["factImdbRating", imdb],
      ["factMovielens", item.movielens_ratings != null ? num(item.movielens_ratings, 0) : null],
      ["factImdbId", item.tconst],
      ["factMovielensId", item.movie_id],
    ];
    const dl = el("dl", { className: "facts" });
    for (const [key, value] of rows) {
      if (value === undefined || value === null || value === "") continue;
      dl.append(el("dt", {}, t(key)), el("dd", {}, String(value)));
    }
    return dl;
  }

  function suggestionsOf(body) {
    const list = body && Array.isArray(body.suggestions) ? body.suggestions : [];
    if (!list.length) return null;
    const p = el("p", { className: "suggestions" }, `${t("didYouMean")} `);
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

  function detailsHeading(item) {
    $("details-heading").replaceChildren(...titleText(item).filter(Boolean));
  }

  async function showDetails(item) {
    const ref = refOf(item);
    if (!ref) return [];
    const section = $("details");
    section.hidden = false;
    showError("details-error", null);
    detailsHeading(item);
    $("title-details").replaceChildren(el("p", { className: "status" }, t("loading")));
    currentTitle = item;
    const similar = loadSimilar();
    similar.catch(() => {}); // shown inline; the caller still sees the rejection
    try {
      const body = await api(`titles/${encodeURIComponent(ref)}`);
      const title = body.title ?? item;
      if (currentTitle === item) {
        currentTitle = title;
        detailsHeading(title);
        const facts = el("div", {}, detailsTable(title), ratingButtonsFor(title));
        $("title-details").replaceChildren(
          el("div", { className: "details-grid" }, poster(title, true), facts),
        );
      }
    } catch (err) {
      $("title-details").replaceChildren();
      showError("details-error", err);
      const hint = suggestionsOf(err.body);
      if (hint) $("title-details").append(hint);
    }
    return similar;
  }

  function ratingButtonsFor(item) {
    const wrapper = el("div", { className: "title-item", dataset: { ref: refOf(item) ?? "" } });
    wrapper.append(ratingButtons(item));
    return el("div", { className: "rate-this" }, el("span", {}, t("yourRating")), wrapper);
  }

  function similarFilters() {
    return {
      genres: $("similar-genre").value.trim() || null,
      title_type: $("similar-type").value || null,
      min_year: intOrNull($("similar-min-year").value),
      max_year: intOrNull($("similar-max-year").value),
    };
  }

  function similarityNote(r) {
    if (r.similarity == null) return null;
    return el("span", { className: "score" }, t("similarity", { value: num(r.similarity, 2) }));
  }

  // The first page of similar titles (or with `more`, the next page appended).
  async function loadSimilar(more = false) {
    const item = currentTitle;
    const ref = item && refOf(item);
    if (!ref) return [];
    const seq = ++similarSeq;
    if (!more) {
      similarPage.offset = 0;
      similarPage.filters = similarFilters();
      $("similar-results").replaceChildren(el("li", { className: "status" }, t("loading")));
    }
    showError("similar-error", null);
    $("similar-more").hidden = true;
    const offset = similarPage.offset;
    try {
      const qs = query({ ...similarPage.filters, k: SIMILAR_K, offset });
      const body = await api(`titles/${encodeURIComponent(ref)}/similar${qs}`);
      const results = listOf(body, "items", "results");
      if (seq === similarSeq) {
        renderList("similar-results", results, similarityNote, more);
        if (!more && !results.length) emptyState("similar-results", "noSimilar");
        similarPage.offset = offset + SIMILAR_K;
        $("similar-more").hidden = !hasMore(results.length, SIMILAR_K, similarPage.offset);
      }
      return results;
    } catch (err) {
      if (seq === similarSeq) {
        if (!more) $("similar-results").replaceChildren();
        showError("similar-error", err);
      }
      throw err;
    }
  }

  // Another page may follow: this one was full and the API still pages that far.
  function hasMore(count, k, nextOffset) {
    return count >= k && nextOffset <= MAX_OFFSET;
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

  function explanationOf(r, strategy) {
    const because = r.because && typeof r.because === "object" ? r.because : null;
    if (because && because.title) {
      const mine = ratings.get(String(because.ref));
      const title = because.localized_title || mine?.localized_title || because.title;
      if (because.rating == null) return t("becauseTheyRated", { title });
      return t("becauseYouRated", { title, stars: stars(because.rating) });
    }
    if (strategy === "popular") return t("amongPopular");
    if (strategy === "two_tower") return t("matchesRatings");
    return r.explanation ? String(r.explanation) : "";
  }

  function whyBox(r, strategy) {
    const box = el("span", { className: "why" });
    if (r.predicted_rating != null) {
      const text = t("predicted", { stars: stars(r.predicted_rating) });
      box.append(el("strong", { className: "predicted" }, text));
    }
    const why = explanationOf(r, strategy);
    if (why) box.append(" ", el("span", { className: "explanation" }, why));
    return box;
  }

  // What the recommendations list shows: `fetch(offset)` gives a page, `note` names the mode.
  function ratingsRequest() {
    const rated = [...ratings.values()].map((r) => ({ title: r.ref, rating: r.rating }));
    const filters = recommendationFilters();
    return {
      mode: "ratings",
      note: (response) =>
        rated.length && response.strategy !== "popular"
          ? t("modeNoteRatings", { n: rated.length })
          : t("modeNotePopular"),
      fetch: (offset) => {
        const body = { ratings: rated, k: RECOMMEND_K, offset };
        if (Object.keys(filters).length) body.filters = filters;
        return api("recommendations", { body });
      },
      error: errorText,
    };
  }

  function userRequest(userId) {
    const f = recommendationFilters();
    const filters = { genres: f.genres?.join(","), min_year: f.min_year, max_year: f.max_year };
    return {
      mode: "user",
      note: () => t("modeNoteUser", { id: userId }),
      fetch: (offset) => {
        const qs = query({ ...filters, k: RECOMMEND_K, offset });
        return api(`movielens-users/${encodeURIComponent(userId)}/recommendations${qs}`);
      },
      error: (err) =>
        err.status === 404 && err.kind === "http"
          ? t("error", { message: t("errUnknownUser", { id: userId }) })
          : errorText(err),
    };
  }

  // The first page of recommendations for the active mode (with `more`: the next page).
  async function recommend(more = false) {
    if (!more) {
      const user = selectedUser();
      if (mode === "user" && user === null) return [];
      recommendRequest = mode === "user" ? userRequest(user) : ratingsRequest();
      recommendOffset = 0;
      $("recommend-note").textContent = t("loading");
    }
    const request = recommendRequest;
    const offset = recommendOffset;
    const seq = ++recommendSeq;
    showError("recommend-error", null);
    $("recommend-more").hidden = true;
    try {
      const response = await request.fetch(offset);
      const results = listOf(response, "items", "results");
      if (seq !== recommendSeq) return results;
      renderList("recommendations", results, (r) => whyBox(r, response.strategy), more);
      $("recommendations-section").dataset.mode = request.mode;
      $("recommend-note").textContent = request.note(response);
      if (!more && !results.length) emptyState("recommendations", "noRecommendations");
      recommendOffset = offset + RECOMMEND_K;
      $("recommend-more").hidden = !hasMore(results.length, RECOMMEND_K, recommendOffset);
      return results;
    } catch (err) {
      if (seq === recommendSeq) {
        if (!more) {
          $("recommend-note").textContent = "";
          $("recommendations").replaceChildren();
        }
        showError("recommend-error", err, request.error(err));
      }
      throw err;
    }
  }

  // ------------------------------------------------------------------------------ users
  let pinnedUser = null; // a user asked for by id (`?user=`), listed even off the shown page

  function selectedUser() {
    return intOrNull($("user-select").value);
  }

  async function loadUsers(offset) {
    showError("users-error", null);
    try {
      const body = await api(`movielens-users${query({ limit: USERS_PAGE, offset })}`);
      const items = listOf(body, "items").filter((u) => u && u.user_id != null);
      users = { offset, total: Number(body.total ?? items.length), items };
    } catch (err) {
      users = null;
      const reason = errorText(err).replace(/^[^:]*:\s*/, "");
      showError("users-error", err, t("usersUnavailable", { message: reason }));
    }
    renderUsers();
    return users;
  }

  function renderUsers() {
    const select = $("user-select");
    const keep = select.value;
    const items = users ? [...users.items] : [];
    if (pinnedUser !== null && !items.some((u) => Number(u.user_id) === pinnedUser)) {
      items.unshift({ user_id: pinnedUser, ratings: null });
    }
    select.replaceChildren(
      ...items.map((u) =>
        el(
          "option",
          { value: String(u.user_id) },
          u.ratings == null
            ? t("modeNoteUser", { id: u.user_id })
            : t("userOption", { id: u.user_id, n: Number(u.ratings) }),
        ),
      ),
    );
    if (keep && items.some((u) => String(u.user_id) === keep)) select.value = keep;
    select.disabled = !items.length;
    const shown = users ? users.items.length : 0;
    $("users-range").textContent = !users
      ? ""
      : shown
        ? t("usersRange", { from: users.offset + 1, to: users.offset + shown, total: users.total })
        : t("noUsers");
    $("users-prev").disabled = !users || users.offset === 0;
    $("users-next").disabled = !users || users.offset + shown >= users.total;
  }

  async function setMode(value) {
    mode = value === "user" ? "user" : "ratings";
    $(mode === "user" ? "mode-user" : "mode-ratings").checked = true;
    $("ratings-panel").hidden = mode !== "ratings";
    $("user-panel").hidden = mode !== "user";
    $("clear-ratings").hidden = mode !== "ratings";
    $("recommend-section").dataset.mode = mode;
    if (mode === "user" && users === null) await loadUsers(0);
  }

  async function showUser(userId) {
    pinnedUser = userId;
    await setMode("user");
    renderUsers();
    $("user-select").value = String(userId);
    return recommend();
  }

  // ------------------------------------------------------------------------------ startup
  async function checkService() {
    try {
      const body = await api("version");
      if (body.model_version) setModelVersion(body.model_version);
      $("service-status").textContent = "";
    } catch (err) {
      const text = { notReady: "modelLoading", offline: "serverDown" }[err.kind];
      $("service-status").textContent = text ? t(text) : "";
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
      if (!$("recommend-more").hidden) await recommend(true);
      const user = intOrNull(params.get("user") ?? "");
      if (user !== null && !(await showUser(user)).length) {
        throw new Error(`no recommendations for user ${user}`);
      }
      document.body.dataset.demo = "done";
    } catch (err) {
      document.body.dataset.demo = `error: ${err && err.message ? err.message : String(err)}`;
    }
  }

  function onSubmit(id, action) {
    $(id).addEventListener("submit", (event) => {
      event.preventDefault();
      action();
    });
  }

  function bindEvents() {
    $("language").addEventListener("change", (event) => changeLanguage(event.target.value));
    $("search-input").addEventListener("input", scheduleSearch);
    onSubmit("search-form", () => {
      clearTimeout(searchTimer);
      search($("search-input").value).catch(() => {});
    });
    onSubmit("similar-form", () => loadSimilar().catch(() => {}));
    $("similar-more").addEventListener("click", () => loadSimilar(true).catch(() => {}));
    onSubmit("recommend-form", () => recommend().catch(() => {}));
    $("recommend-more").addEventListener("click", () => recommend(true).catch(() => {}));
    $("clear-ratings").addEventListener("click", () => {
      ratings.clear();
      renderRatings();
      refreshStars();
    });
    for (const id of ["mode-ratings", "mode-user"]) {
      $(id).addEventListener("change", (event) => {
        setMode(event.target.value).then(() => recommendRequest && recommend().catch(() => {}));
      });
    }
    $("user-select").addEventListener("change", () => recommend().catch(() => {}));
    $("users-prev").addEventListener("click", () => loadUsers(Math.max(0, users.offset - USERS_PAGE)));
    $("users-next").addEventListener("click", () => loadUsers(users.offset + USERS_PAGE));
  }

  function init() {
    $("language").replaceChildren(
      ...LANGUAGES.map(([code, name]) => el("option", { value: code, lang: code }, name)),
    );
    setLanguage(initialLanguage(), pick(params.get("lang")) !== null);
    bindEvents();
    restoreRatings();
    renderRatings();
    renderUsers();
    checkService();
    const user = intOrNull(params.get("user") ?? "");
    if (demoQuery !== null) runDemo(demoQuery);
    else if (user !== null) showUser(user).catch(() => {});
  }

  init();
})();
