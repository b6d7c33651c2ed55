"""Caption curation: ImageNet class tables, WordNet lemma matching, caption variants, subsets.

The command line is ``python -m dist_data.captions COMMAND`` (:mod:`dist_data.captions`).
"""
