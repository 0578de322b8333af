"""`python -m recommender_lib.registry`: the registry CLI."""

from recommender_lib.registry.cli import main

raise SystemExit(main())
