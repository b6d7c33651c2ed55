"""The shipped WordNet samples (``scripts/make_sample_data.py`` builds them from the database that
:mod:`dist_data.core.wordnet` reads): the default inputs of filter, mine and pretokenize."""

from __future__ import annotations

import os

from ..core.wordnet import WORDNET_DIR, Synset, iter_synsets

__all__ = ["SAMPLE_PAIRS", "SAMPLE_TEXT", "WORDNET_DIR", "Synset", "iter_synsets"]  # the tests and benches read them here

SAMPLE_PAIRS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "wordnet_pairs.jsonl.gz")
SAMPLE_TEXT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "wordnet_text.jsonl.gz")
