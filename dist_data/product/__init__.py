"""Product-catalogue mining: brand-synonym pairs, category triplets, the cleaning step.

The command lines are ``python -m dist_data.pairs``, ``dist_data.triplets`` and ``dist_data.catalog
clean`` (:mod:`dist_data.catalog`).
"""
