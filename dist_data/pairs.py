"""Brand-synonym candidates: every pair of distinct names whose embeddings score at or above a threshold.

Names are compared by their normal form (:func:`dist_data.product.names.normalize_name`); rows whose
names normalise alike are one name, reported as a group. Each name is embedded once, as its most
frequent spelling, in blocks made by its normal form's hash (so the pairs and scores do not depend
on the order of the rows or the number of ranks), and searched against all the others with the exact index (``--index=sharded``: no rank holds more than
its share of the vectors, and nothing holds an N x N matrix). A pair is reported once, with its
score, when the two score at or above ``--min_score``: a name whose ``--max_neighbors`` nearest names
all do is searched again, deeper, so no pair is missed (:meth:`dist_data.core.run.Run.threshold_pairs`).

    torchrun --nproc-per-node=8 -m dist_data.pairs --dataset=brands.csv --text_key=brandname \\
        --model_name=sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2 --min_score=0.85 \\
        --max_neighbors=50 --index=sharded --output_dir=DIR
    python -m dist_data.pairs --dataset=brands.csv --text_key=brandname --transliterate --output_dir=DIR

Outputs in ``--output_dir``: ``pairs.jsonl`` and ``pairs.csv`` (``name_a, name_b, score, row_a,
row_b, source, distance_to_threshold``; rows are each name's first 0-based line id) in review order
(``--sort``), ``duplicates.jsonl`` (one group of rows per normalised name), ``scores.png``,
``stats.json``, ``rejects.jsonl``, ``args.json``. With ``--transliterate`` a name whose Latin <->
Cyrillic reading (:func:`dist_data.product.names.transliterations`) is another name's normal form
makes a pair with it whatever its score, marked ``transliteration`` (``model+transliteration`` when
the model found it too).
"""

from __future__ import annotations

import collections
import csv
import json
from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .product import pairs as steps
from .product.names import most_frequent_spelling, normalize_name, transliterations
from .core import distributed
from .core.cli import at_least, cosine, flag, in_range, non_empty, one_of
from .core.collection import CollectionOptions
from .core.dedup import text_hashes
from .core.keys import KeyedVectors, Owners, fetch_held, global_first
from .core.options import INDEX_HELP, INDEX_MODES, IndexOptions, ModelOptions, RunOptions
from .core.paths import INPUT_SPEC
from .core.run import Output, Run, run_main
from .core.select import exact_scores
from .core.stats import Stats
from .core.write import atomic_open, write_lines
from .core.files import read_lines

RESULT_NAME = "pairs.jsonl"
CSV_NAME = "pairs.csv"
DUPLICATES_NAME = "duplicates.jsonl"
COLUMNS = ("name_a", "name_b", "score", "row_a", "row_b", "source", "distance_to_threshold")


@dataclass(frozen=True, kw_only=True)
class PairsOptions(RunOptions, ModelOptions, IndexOptions, CollectionOptions):
    """Brand-synonym candidates: pairs of distinct names scoring at or above --min_score."""

    dataset_required = True  # checked with the collection flags: --dataset, or --collection
    counts = ("names", "duplicate_rows", "duplicate_groups", "pairs_model", "pairs_transliteration",
              "transliteration_variants", "searched_deeper", "names_of_several_spellings", "spellings_merged")
    summary = ("names", "duplicate_rows", "duplicate_groups", "pairs_transliteration")
    kept_unit = "pairs"

    index: str = flag("sharded", INDEX_HELP, one_of(*INDEX_MODES))
    dataset: str | None = flag(None, "names: csv/tsv/parquet/jsonl file, folder, glob or comma list (required unless "
                               "--collection)", non_empty, path=INPUT_SPEC)
    text_key: str = flag("name", "the name field", non_empty)
    min_score: float = flag(0.85, "report pairs whose cosine is >= this", cosine)
    max_neighbors: int = flag(50, "nearest other names searched per name at first; a name with all of them at or "
                              "above --min_score is searched again deeper, so every pair above it is found (the same "
                              "result for any value)", at_least(1), result=False)
    sort: str = flag("score", "review order: score (highest first) or ambiguous_first (nearest --min_score first)",
                     one_of(*steps.SORTS))
    transliterate: bool = flag(False, "also pair names that are Latin <-> Cyrillic readings of each other")
    max_variants: int = flag(32, "--transliterate: readings tried per name (fewest changed letters first; a long "
                             "name has billions, so at most 4096)", in_range(1, 4096))

    def result_file(self) -> str:
        return RESULT_NAME

    def side_outputs(self) -> list[str]:
        return [CSV_NAME, DUPLICATES_NAME]


def run_pairs(info: distributed.DistInfo, opts: PairsOptions, run: Run) -> dict | None:
    """The pairs pipeline on this rank; returns the merged stats on rank 0."""
    stats = run.stats
    shard = run.read([opts.text_key])
    run.begin()

    # identity: the normal form. Exact duplicates (rows that normalise alike) are reported by row.
    names = shard.column(0)
    norms = [normalize_name(t) for t in names]
    ok = np.array([bool(n) for n in norms], dtype=bool)
    stats.add("dropped", int((~ok).sum()), reason="empty_after_normalisation")
    pos, gids = shard.positions[ok], shard.gids[ok]
    names = [t for t, good in zip(names, ok) if good]
    norms = [t for t, good in zip(norms, ok) if good]
    rep = global_first(pos, norms)
    first = rep == pos
    groups = _duplicate_groups(info, rep, first, gids, names)
    stats.add("names", int(first.sum()))
    stats.add("duplicate_rows", int((~first).sum()))
    stats.add("duplicate_groups", len(groups) if info.is_main else 0)

    # one text per name, whatever the input's order: its most frequent spelling, embedded in blocks
    # made by the normal form's hash, so the same names give the same vectors and scores
    n_names = int(distributed.all_gather_array(np.array([first.sum()], dtype=np.int64)).sum())
    held = _name_groups(stats, norms, names, gids, n_names, run.block_rows)
    ids, first_names, first_gids = held.ids, held.spellings, held.first_rows
    with run.embed(len(ids)) as embed:
        emb = embed(ids, first_names, "name", blocks=held.blocks)

    # every pair at or above --min_score, exact whatever --max_neighbors (a name whose list is all above
    # it is searched again deeper), and each name's nearest other name
    a, b, s, nearest = run.threshold_pairs(emb, ids, np.arange(len(ids)), opts.min_score, opts.max_neighbors + 1)
    found = steps.make_pairs(a, b, s, steps.MODEL)

    owners = Owners.gather([held.id_range])
    vectors = KeyedVectors(ids, emb)
    if opts.transliterate:
        found = np.concatenate([found, _transliteration_pairs(stats, ids, held.norms, vectors, owners,
                                                              shard.n_processed, opts.max_variants)])

    # every pair goes to the rank holding its first name, which keeps one row of it
    _, received = distributed.route(found, owners.of(found["a"]))
    mine = steps.combine(np.concatenate(received))
    stats.add("kept", len(mine))
    stats.add("pairs_model", int((mine["source"] & steps.MODEL).astype(bool).sum()))
    stats.add("pairs_transliteration", int((mine["source"] & steps.TRANSLITERATION).astype(bool).sum()))

    b_names, b_gids = fetch_held(mine["b"], owners, ids, first_names, first_gids)
    a_at = np.searchsorted(ids, mine["a"])
    records = []
    for (_, _, score, source), at, name_b, row_b in zip(mine.tolist(), a_at.tolist(), b_names, b_gids.tolist()):
        name_a, row_a = first_names[at], int(first_gids[at])
        if name_b < name_a:  # a pair reads the same whatever the input's order: its names in text order
            name_a, name_b, row_a, row_b = name_b, name_a, row_b, row_a
        records.append((steps.review_key(score, name_a, name_b, opts.min_score, opts.sort),
                        json.dumps({"name_a": name_a, "name_b": name_b, "score": score, "row_a": row_a,
                                    "row_b": row_b, "source": steps.SOURCES[source],
                                    "distance_to_threshold": abs(score - opts.min_score)}, ensure_ascii=False)))
    records.sort(key=lambda r: r[0])

    run.report_scores(f"dist_data.pairs: min_score={opts.min_score}",
                      {"pair_score": mine["score"], "nearest_other_name": nearest[np.isfinite(nearest)]},
                      [("scores of the reported pairs", ["pair_score"], "cosine"),
                       ("each name's nearest other name", ["nearest_other_name"], "cosine")])
    run.write_parts((line for _, line in records), shard.rejects)  # each rank's pairs in review order
    return run.merge(result=Output(RESULT_NAME, part="part", key=lambda line: _key(line, opts)),
                     outputs=[Output(CSV_NAME, write=lambda path: _write_csv(run.file(RESULT_NAME), path)),
                              Output(DUPLICATES_NAME, write=lambda path: write_lines(
                                  path, (json.dumps(g, ensure_ascii=False) for g in groups)))])


def _key(line: str, opts: PairsOptions) -> tuple:
    r = json.loads(line)
    return steps.review_key(r["score"], r["name_a"], r["name_b"], opts.min_score, opts.sort)


def _write_csv(jsonl: str, path: str) -> None:
    with atomic_open(path) as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(COLUMNS)
        for line in read_lines([jsonl]):
            r = json.loads(line)
            out.writerow([r[c] for c in COLUMNS])


@dataclass
class NameGroups:
    """This rank's names (groups of rows that normalise alike), in an order that depends on neither
    the input's row order nor the world size: by block (the normal form's hash modulo the number of
    blocks), then by hash. Ids are dense over that order."""

    ids: np.ndarray  # (m,) int64 ascending
    blocks: np.ndarray  # (m,) int64 the embedding block of each
    spellings: list[str]  # the text embedded and written: the most frequent spelling, ties to the smallest
    first_rows: np.ndarray  # (m,) int64 the name's first input row
    norms: list[str]
    id_range: tuple[int, int]


def _name_groups(stats: Stats, norms: list[str], names: list[str], gids: np.ndarray, n_names: int,
                 block_rows: int) -> NameGroups:
    """Each name's spellings are counted on the rank its block belongs to (collective)."""
    local: dict[tuple[str, str], list[int]] = {}
    for norm, name, gid in zip(norms, names, gids.tolist()):
        seen = local.get((norm, name))
        if seen is None:
            local[(norm, name)] = [1, gid]
        else:
            seen[0] += 1
            seen[1] = min(seen[1], gid)
    keys = list(local)
    world = distributed.get_world_size()
    n_blocks = max(1, -(-n_names // block_rows))
    hashes = text_hashes([norm for norm, _ in keys])
    row = np.empty(len(keys), dtype=[("hash", hashes.dtype), ("block", np.int64), ("count", np.int64),
                                     ("first", np.int64)])
    row["hash"] = hashes
    row["block"] = (hashes.view(np.uint64).reshape(-1, 2)[:, 0] % np.uint64(n_blocks)).astype(np.int64)
    row["count"] = [local[k][0] for k in keys]
    row["first"] = [local[k][1] for k in keys]
    dest = row["block"] * world // n_blocks
    _, received = distributed.route(row, dest)
    here = np.concatenate(received) if received else row[:0]
    got_norms = distributed.route_strings([norm for norm, _ in keys], dest)
    got_names = distributed.route_strings([name for _, name in keys], dest)
    by_norm: dict[str, list] = {}
    for (h, block, count, first_row), norm, name in zip(here.tolist(), got_norms, got_names):
        entry = by_norm.setdefault(norm, [block, h, {}, first_row])
        entry[2][name] = entry[2].get(name, 0) + count
        entry[3] = min(entry[3], first_row)
    ordered = sorted(by_norm.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    # ranks hold runs of blocks in rank order: this rank's ids start after the names of the ranks before it
    start = distributed.count_before(len(ordered))
    spellings = [most_frequent_spelling(spelled) for _, (_, _, spelled, _) in ordered]
    merged = [len(spelled) for _, (_, _, spelled, _) in ordered]
    stats.add("names_of_several_spellings", sum(n > 1 for n in merged))
    stats.add("spellings_merged", sum(merged) - len(merged))
    return NameGroups(ids=start + np.arange(len(ordered), dtype=np.int64),
                      blocks=np.asarray([e[0] for _, e in ordered], dtype=np.int64), spellings=spellings,
                      first_rows=np.asarray([e[3] for _, e in ordered], dtype=np.int64),
                      norms=[norm for norm, _ in ordered], id_range=(start, start + len(ordered)))


def _duplicate_groups(info: distributed.DistInfo, rep: np.ndarray, first: np.ndarray, gids: np.ndarray,
                      names: list[str]) -> list[dict]:
    """On rank 0: one group per normal form held by several rows (its rows and their names), in row order."""
    dup_reps = np.unique(distributed.all_gather_array(np.unique(rep[~first])))
    member = np.isin(rep, dup_reps)
    rows = [(int(r), int(g), names[i]) for i, (r, g) in enumerate(zip(rep, gids)) if member[i]]
    if not info.is_main:
        distributed.all_gather_object(rows)
        return []
    by_rep: dict[int, list[tuple[int, str]]] = {}
    for part in distributed.all_gather_object(rows):
        for r, g, name in part:
            by_rep.setdefault(r, []).append((g, name))
    groups = []
    for r in sorted(by_rep):
        members = sorted(by_rep[r])
        groups.append({"normalized": normalize_name(members[0][1]),
                       "name": most_frequent_spelling(collections.Counter(n for _, n in members)),
                       "rows": [g for g, _ in members], "names": [n for _, n in members]})
    return groups


def _transliteration_pairs(stats: Stats, ids: np.ndarray, norms: list[str], vectors: KeyedVectors, owners: Owners,
                           n_processed: int, max_variants: int) -> np.ndarray:
    """Pairs of a name and another name equal to one of its Latin <-> Cyrillic readings, scored exactly.

    A reading gets the key ``n_processed + id * max_variants + v`` (above every name's id): the
    lowest key sharing its text is then a name's id when some name reads so (one collective)."""
    keys, texts, owner_of = [], [], []
    for i, (name_id, norm) in enumerate(zip(ids.tolist(), norms)):
        for v, text in enumerate(transliterations(norm, max_variants)):
            keys.append(n_processed + name_id * max_variants + v)
            texts.append(text)
            owner_of.append(i)
    stats.add("transliteration_variants", len(keys))
    all_keys = np.concatenate([ids, np.asarray(keys, dtype=np.int64)])
    rep = global_first(all_keys, norms + texts)[len(ids):]
    hit = np.flatnonzero(rep < n_processed)
    src = np.asarray(owner_of, dtype=np.int64)[hit]
    partner = rep[hit]
    keep = ids[src] != partner
    src, partner = src[keep], partner[keep]
    partner_vectors = vectors.lookup(partner, owners)
    scores = exact_scores(vectors.vectors[src], partner_vectors, np.arange(len(src))[:, None])[:, 0]
    return steps.make_pairs(ids[src], partner, scores, steps.TRANSLITERATION)


COMMANDS = {None: (PairsOptions, run_pairs)}  # what dist_data.registry lists

@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.pairs --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.pairs", argv)


if __name__ == "__main__":
    main()
