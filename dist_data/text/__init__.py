"""Text-domain logic: mining stages, packing, MTEB tasks, the shipped WordNet samples."""
