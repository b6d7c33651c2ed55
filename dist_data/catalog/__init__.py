"""Product-catalogue mining: brand-synonym pairs, category triplets, the cleaning step."""
