"""`python -m recommender_lib.sources.sample_data`: write a sample mirror (see `main`)."""

import sys

from recommender_lib.sources.sample_data import main

if __name__ == "__main__":
    sys.exit(main())
