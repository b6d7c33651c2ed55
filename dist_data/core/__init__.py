"""The engine shared by every entry point: distributed plumbing, I/O, embedding, index, selection, run folder."""
