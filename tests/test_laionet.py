"""LAIONet (``python -m dist_data.laionet``): pure steps against pandas / brute-force references,
the CLIP text tower against OpenAI's own code (clip-anytorch) with identical weights, the
name-which-is-definition score on real text, the commands end to end (1 vs 2 ranks), and
img2dataset's real output (``tests/data/img2dataset``, made by ``scripts/make_img2dataset_fixture.py``).
"""

from __future__ import annotations

import collections
import json
import os
import string
import sys
import tarfile
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caption_data import incaps_rows, laion_rows, real_captions, write_json, write_parquet_shards
from conftest import assert_plot, run_cli
from dist_data.caption import laion
from dist_data.caption.classes import imagenet_classes
from dist_data.caption.lemmas import LaionetMatcher, LemmaMatcher
from dist_data.core.wordnet import iter_synsets

CLASSES = imagenet_classes()
WNIDS = [c.wnid for c in CLASSES]
HERE = os.path.dirname(os.path.abspath(__file__))
I2D = os.path.join(HERE, "data", "img2dataset")
I2D_URLS = os.path.join(HERE, "data", "img2dataset_url_list.parquet")


# ---------------------------------------------------------------- pure steps vs pandas

def pandas_subset(df: pd.DataFrame, thresh: float, frac: float, n: int | None, seed: int) -> pd.DataFrame:
    """clip-beyond-tail's create_laionet_subsets, step for step in pandas (the reference)."""
    one_per_cls = df.groupby("wnid").head(1)
    df = df[df["sim"] >= thresh]
    df = df.sample(n=n, random_state=seed) if n is not None else df.sample(frac=frac, random_state=seed)
    lost = set(WNIDS) - set(df["wnid"])
    df = pd.concat([df, one_per_cls[one_per_cls["wnid"].isin(lost)]])
    if n is not None and len(df) > n:
        top = df["wnid"].value_counts().index.tolist()[:10]
        df = df.drop(df[df["wnid"].isin(top)].sample(n=len(df) - n, random_state=seed).index)
    return df.sort_index()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_subset_positions_equal_pandas(seed):
    rng = np.random.default_rng(seed)
    n_rows = 400
    labels = np.minimum(rng.zipf(1.6, n_rows), 30) + 10 * seed  # a long tail over ~30 classes
    sims = rng.random(n_rows).round(2)
    df = pd.DataFrame({"wnid": [WNIDS[c] for c in labels], "sim": sims})
    for frac, n in [(1.0, None), (0.5, None), (0.125, None), (1.0, 150), (1.0, 60)]:
        want = pandas_subset(df, 0.4, frac, n, seed).index.to_numpy()
        got = laion.subset_positions(labels, sims, 0.4, frac, n, seed, 1000)
        np.testing.assert_array_equal(got.positions, want)
        if n is None:  # no class lost (trimming to n may empty a small class of the top 10, as the original)
            assert set(labels[got.positions]) == set(labels)
        else:
            assert len(got.positions) == n


def test_keep_mask_equals_the_original_filter():
    rng = np.random.default_rng(3)
    sims = rng.random(300)
    sims[::17] = np.nan
    nsfw = rng.choice(["UNLIKELY", "UNSURE", "NSFW", None], 300).tolist()
    df = pd.DataFrame({"sim": sims, "NSFW": nsfw})
    df.loc[df["NSFW"] != "UNLIKELY", "sim"] = np.nan  # sample_laion_from_most_similars: --remove_nsfw
    want = np.flatnonzero((df["sim"] > 0.5).to_numpy())
    keep, reason = laion.keep_mask(sims, nsfw, 0.5)
    np.testing.assert_array_equal(np.flatnonzero(keep), want)
    dropped = collections.Counter(reason[~keep].tolist())
    assert sum(dropped.values()) + keep.sum() == 300 and dropped["nsfw"] == sum(v != "UNLIKELY" for v in nsfw)
    assert set(dropped) == set(laion.FILTER_REASONS) and not reason[keep].any()


def test_claim_first_unclaimed_in_reference_order():
    ids = np.array([[5, 3, 9], [5, 3, 1], [3, 5, 9], [5, 3, 9], [-1, -1, -1]])
    c = laion.claim(ids, -np.arange(15, dtype=float).reshape(5, 3))
    assert c.laion_ids.tolist() == [5, 3, 9] and c.reference.tolist() == [0, 1, 2]
    assert c.unclaimed.tolist() == [3, 4] and c.score.tolist() == [0.0, -4.0, -8.0]


def test_match_frequency_reaches_targets_without_duplicates():
    rng = np.random.default_rng(0)
    labels, extra = rng.integers(0, 6, 200), rng.integers(0, 6, 60)
    indices, extra_indices = np.arange(200) * 3, rng.choice(600, 60, replace=False)
    target = np.array([10, 40, 0, 5, 80, 33] + [0] * 994)
    m = laion.match_frequency(target, labels, indices, extra, extra_indices, 42)
    got = np.concatenate([indices[m.primary], extra_indices[m.extra]])
    assert len(set(got.tolist())) == len(got)  # a LAION row at most once
    counts = np.bincount(np.concatenate([labels[m.primary], extra[m.extra]]), minlength=1000)
    assert (counts + np.bincount(list(m.short), weights=list(m.short.values()), minlength=1000) == target).all()
    again = laion.match_frequency(target, labels, indices, extra, extra_indices, 42)
    assert (again.primary == m.primary).all() and (again.extra == m.extra).all()


def test_img2dataset_keys():
    assert laion.img2dataset_row("000013", "00001", 4) == 7
    assert laion.img2dataset_row("000000000", "00000", 10000) == 0
    assert laion.img2dataset_row("000030042", "00003", 10000) == 30042
    for key, shard in [("000013", "00002"), ("00013", "00001"), ("0000a3", "00000")]:
        with pytest.raises(ValueError):
            laion.img2dataset_row(key, shard, 4)
    with pytest.raises(ValueError, match="number_sample_per_shard"):
        laion.img2dataset_row("000015", "00001", 4)


# ---------------------------------------------------------------- the CLIP text tower

def tiny_clip(folder: str) -> str:
    """A seeded tiny CLIP (open_clip's config format, OpenAI's layout: width 64 = one 64-dim head)."""
    import torch

    import dist_data  # noqa: F401 - the torchvision shim before open_clip
    import open_clip

    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}}, f)
    torch.manual_seed(0)
    model = open_clip.create_model("local-dir:" + folder, load_weights=False)
    torch.save(model.state_dict(), os.path.join(folder, "open_clip_pytorch_model.bin"))
    return folder


def test_clip_text_tower_equals_openai_clip(tmp_path):
    import packaging.version
    import torch

    from dist_data.core.embed import load_model

    sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))  # clip-anytorch's import
    clip = pytest.importorskip("clip")
    from clip.model import build_model

    folder = tiny_clip(str(tmp_path / "tiny"))
    ours = load_model(f"open_clip:local-dir:{folder}", torch.device("cpu"))
    state = torch.load(os.path.join(folder, "open_clip_pytorch_model.bin"))
    ref = build_model({k: v.clone() for k, v in state.items()}).float().eval()
    ref.load_state_dict(state)  # build_model rounds to fp16; the same float32 weights again
    texts = [laion.query_text(c) for c in CLASSES[:40]] + ["a photo of a tench " * 40, "", "Ünïcödé café"]
    with torch.no_grad():
        want = ref.encode_text(clip.tokenize(texts, truncate=True)).float()
    want = torch.nn.functional.normalize(want, dim=-1).numpy()
    got = ours.encode(texts, batch_size=7)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert ours.get_sentence_embedding_dimension() == 32


# ---------------------------------------------------------------- quality: the score on real text

def quality_rows(max_negatives: int = 800) -> tuple[list[dict], set[int]]:
    """Caption-like texts with the class each is scored against. Right sense: every class's name and
    description from imagenet-classes ("tiger shark: A large, heavy-bodied shark ..."); a labelled LAION
    caption names its class too, so both sides carry the class word and only its sense tells them apart.
    Wrong sense: WordNet example sentences of other synsets that name one class's unique lemma ("the
    plane made a smooth landing" is not the carpenter's plane)."""
    import imagenet_classes

    from caption_data import class_description

    matcher = LemmaMatcher([c.lemmas for c in CLASSES], unique_only=True)
    class_ids = {c.wnid[1:] for c in CLASSES}
    rows = [{"TEXT": f"{imagenet_classes.get_1k_clean_name(c.label)}: {class_description(c.label)}",
             "wnids": [c.wnid]} for c in CLASSES if class_description(c.label)]
    negatives: set[int] = set()
    for s in iter_synsets(pos="nv"):
        if s.offset in class_ids:
            continue
        for e in s.examples:
            found = matcher.match(e)
            if len(found) == 1 and len(negatives) < max_negatives:
                negatives.add(len(rows))
                rows.append({"TEXT": e, "wnids": [WNIDS[found[0]]]})
    return rows, negatives


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    scores = np.concatenate([pos, neg])
    ranks = scores.argsort().argsort() + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def test_name_def_similarity_separates_right_and_wrong_senses(tmp_path, model):
    rows, negatives = quality_rows()
    assert len(rows) - len(negatives) > 900 and len(negatives) == 800
    shards = write_parquet_shards(str(tmp_path / "labelled"), rows, n_shards=1)
    run_cli("dist_data.laionet", "similarity", f"--df_path={shards}",
            f"--output_dir={tmp_path / 'S'}", "--block_rows=512", nproc=0)
    out = pq.read_table(tmp_path / "S" / "laion_similarity.parquet").to_pandas()
    assert len(out) == len(rows)
    is_neg = out["laion_index"].isin(negatives).to_numpy()
    sims = out[laion.SIMILARITY].to_numpy()
    # the independent reference: sentence-transformers' own encode and cosine
    from sentence_transformers.util import cos_sim

    queries = {c.wnid: laion.query_text(c) for c in CLASSES}
    pick = np.r_[0:20, -20:0]
    ref = cos_sim(model.encode(out["TEXT"].iloc[pick].tolist()),
                  model.encode([queries[w] for w in out[laion.QUERY_WNID].iloc[pick]])).diagonal().numpy()
    np.testing.assert_allclose(sims[pick], ref, atol=2e-5)
    score = auc(sims[~is_neg], sims[is_neg])
    print(f"AUC {score:.3f} over {(~is_neg).sum()} right-sense and {is_neg.sum()} wrong-sense texts")
    assert score > 0.96  # measured 0.984 (1,000 named descriptions, 800 wrong-sense examples)


# ---------------------------------------------------------------- the commands end to end

@pytest.fixture(scope="module")
def laion_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("laion")
    return write_parquet_shards(str(folder / "shards"), laion_rows(900), n_shards=3)


def read(path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def test_label_similarity_search_same_for_one_and_two_ranks(tmp_path, laion_dir):
    refs = write_json(str(tmp_path / "refs.json"), [r for r in incaps_rows(30) if r["wnid"] != "n99999999"])
    for nproc, tag in [(0, "1"), (2, "2")]:
        run_cli("dist_data.laionet", "label", f"--laion={laion_dir}", f"--output_dir={tmp_path / ('L' + tag)}",
                "--block_rows=700", nproc=nproc)
        run_cli("dist_data.laionet", "similarity", f"--df_path={tmp_path / ('L' + tag) / 'laion_labeled.parquet'}",
                f"--output_dir={tmp_path / ('S' + tag)}", "--block_rows=128", nproc=nproc)
        run_cli("dist_data.laionet", "search_similar", f"--references={refs}", "--reference_key=title,tags,description",
                f"--laion={laion_dir}", "--topk=8", f"--output_dir={tmp_path / ('N' + tag)}", "--block_rows=512",
                f"--index={'sharded' if nproc else 'gather'}", nproc=nproc)
    # (a run killed mid-embedding resumes from the engine's cached blocks: test_conformance, for every verb)

    for step, name in [("L", "laion_labeled.parquet"), ("S", "laion_similarity.parquet"), ("N", "laion_similar.parquet")]:
        one, two = read(tmp_path / f"{step}1" / name), read(tmp_path / f"{step}2" / name)
        pd.testing.assert_frame_equal(one, two)
        for extra in ("class_frequency.txt",):
            assert (tmp_path / f"{step}1" / extra).read_text() == (tmp_path / f"{step}2" / extra).read_text()

    rows = laion_rows(900)
    labelled = read(tmp_path / "L1" / "laion_labeled.parquet")
    # label: the matcher's verdict on every row, every column kept, laion_index = row position
    matcher = LemmaMatcher([c.lemmas for c in CLASSES], unique_only=True)
    want = [(i, [WNIDS[c] for c in matcher.match(r["TEXT"])]) for i, r in enumerate(rows)
            if r["TEXT"] and matcher.match(r["TEXT"])]
    assert [(i, list(w)) for i, w in zip(labelled["laion_index"], labelled["wnids"])] == want
    assert labelled["URL"].tolist() == [rows[i]["URL"] for i in labelled["laion_index"]]
    lists = json.loads((tmp_path / "L1" / "wnid_to_laion_indices.json").read_text())
    assert list(lists) == WNIDS and sum(map(len, lists.values())) == sum(len(w) for _, w in want)
    stats = json.loads((tmp_path / "L2" / "stats.json").read_text())["counts"]
    assert stats["read"] == len(rows) and stats["kept"] == len(want)
    assert stats["kept"] + sum(stats["dropped"].values()) == len(rows)

    # similarity: several-class rows dropped and counted; a repeated caption embedded once
    scored = read(tmp_path / "S1" / "laion_similarity.parquet")
    several = sum(len(w) > 1 for _, w in want)
    assert len(scored) == len(want) - several
    s_stats = json.loads((tmp_path / "S2" / "stats.json").read_text())["counts"]
    assert s_stats["dropped"]["several_classes"] == several and sum(s_stats["dropped"].values()) == several
    distinct = len({(w, " ".join(t.split())) for w, t in zip(scored[laion.QUERY_WNID], scored["TEXT"])})
    assert s_stats["texts_embedded"] == distinct + 1000 * 2  # + the class queries once per rank
    dup = scored[scored.duplicated("TEXT", keep=False)]
    assert len(dup) and (dup.groupby("TEXT")[laion.SIMILARITY].nunique() == 1).all()

    # search_similar: every claimed row once, each reference's first unclaimed neighbour
    similar = read(tmp_path / "N1" / "laion_similar.parquet")
    assert similar["laion_index"].is_unique and similar["laion_index"].is_monotonic_increasing
    with np.load(tmp_path / "N1" / "topk.npz") as z:
        claims = laion.claim(z["laion_index"], z["score"])
        assert sorted(claims.laion_ids.tolist()) == similar["laion_index"].tolist()
        wnid_of = {int(i): WNIDS[int(z["wnid_label"][r])] for i, r in zip(claims.laion_ids, claims.reference)}
    assert similar["wnid"].tolist() == [wnid_of[i] for i in similar["laion_index"]]


def test_filter_url_list_subsets_match_freq(tmp_path, laion_dir):
    run_cli("dist_data.laionet", "label", f"--laion={laion_dir}", f"--output_dir={tmp_path / 'L'}", nproc=0)
    # a made-up similarity column is enough for the table steps (the score itself is tested above)
    labelled = read(tmp_path / "L" / "laion_labeled.parquet")
    one = labelled[labelled["wnids"].map(len) == 1].copy()
    one[laion.QUERY_WNID] = one["wnid"] = one["wnids"].map(lambda w: w[0])
    one[laion.SIMILARITY] = np.random.default_rng(0).random(len(one)).astype(np.float32)
    pq.write_table(pa.Table.from_pandas(one, preserve_index=False), tmp_path / "scored.parquet")
    run_cli("dist_data.laionet", "filter", f"--df_path={tmp_path / 'scored.parquet'}", "--similarity_th=0.3",
            "--remove_nsfw", f"--output_dir={tmp_path / 'F'}", nproc=0)
    kept = read(tmp_path / "F" / "laionet_thresh0.3.parquet")
    want = one[(one[laion.SIMILARITY] > 0.3) & (one["NSFW"] == "UNLIKELY")]
    assert kept["laion_index"].tolist() == want["laion_index"].tolist()
    assert (kept["wnid"] == kept[laion.QUERY_WNID]).all()

    run_cli("dist_data.laionet", "url_list", f"--df_path={tmp_path / 'F' / 'laionet_thresh0.3.parquet'}",
            f"--output_dir={tmp_path / 'U'}", nproc=0)
    urls = read(tmp_path / "U" / "url_list.parquet")
    assert list(urls.columns[:2]) == ["URL", "TEXT"] and {"laion_index", "wnid", "NSFW"} <= set(urls.columns)
    assert "--url_col URL --caption_col TEXT" in (tmp_path / "U" / "img2dataset.sh").read_text()

    run_cli("dist_data.laionet", "subsets", f"--df_path={tmp_path / 'F' / 'laionet_thresh0.3.parquet'}",
            "--thresh=0.5", "--frac=0.5", f"--output_dir={tmp_path / 'T'}", nproc=0)
    stats = json.loads((tmp_path / "T" / "stats.json").read_text())
    table = pd.read_csv(tmp_path / "T" / stats["outputs"]["result"], sep="\t")
    ref = pandas_subset(kept.rename(columns={laion.SIMILARITY: "sim"}), 0.5, 0.5, None, 42)
    assert stats["outputs"]["result"] == f"laionet_thresh0.5_frac0.5_{len(ref)}.tsv"
    assert table["filepath"].tolist() == [f"laionet/{w}/{i}.jpg" for w, i in zip(ref["wnid"], ref["laion_index"])]
    assert table["label"].tolist() == [WNIDS.index(w) for w in ref["wnid"]]
    c = stats["counts"]
    assert c["kept"] + sum(c["dropped"].values()) == c["read"] == len(kept)
    freq = pd.read_csv(tmp_path / "T" / "class_frequency.txt", sep="\t", header=None)
    assert len(freq) == 1000 and freq[1].sum() == len(table)
    assert_plot(tmp_path / "T" / "class_frequency.png", *(["C3"] if c["readded_first_of_class"] else []))
    assert_plot(tmp_path / "F" / "class_frequency.png")

    refs = write_json(str(tmp_path / "refs.json"), [r for r in incaps_rows(30) if r["wnid"] != "n99999999"])
    run_cli("dist_data.laionet", "match_freq", f"--df_path={tmp_path / 'F' / 'laionet_thresh0.3.parquet'}",
            f"--t2t_df_path={tmp_path / 'scored.parquet'}", f"--references={refs}", f"--output_dir={tmp_path / 'M'}",
            nproc=0)
    m = json.loads((tmp_path / "M" / "stats.json").read_text())
    table = pd.read_csv(tmp_path / "M" / m["outputs"]["result"], sep="\t")
    target = pd.Series([r["wnid"] for r in json.load(open(refs))]).value_counts()
    got = table["label"].map(lambda lab: WNIDS[lab]).value_counts()
    short = m["counts"]["short_of_target"]
    for w, n in target.items():
        assert got.get(w, 0) + short.get(w, 0) == n
    assert table["filepath"].is_unique and set(table["source"]) <= {"laionet", "laionet-t2t"}
    assert_plot(tmp_path / "M" / "class_frequency.png", "C1")  # target vs achieved


def test_rerun_resumes_and_bad_rows_name_file_and_line(tmp_path, laion_dir):
    flags = [f"--laion={laion_dir}", f"--output_dir={tmp_path / 'L'}"]
    run_cli("dist_data.laionet", "label", *flags, nproc=0)
    again = run_cli("dist_data.laionet", "label", *flags, nproc=0)
    assert "already complete" in again.stderr
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"TEXT": ["a tench in a net", "a goldfish"], "wnids": [["n01440764"], None],
                             "laion_index": [3, 4]}), bad)
    proc = run_cli("dist_data.laionet", "similarity", f"--df_path={bad}", f"--output_dir={tmp_path / 'S'}",
                   nproc=0, check=False)
    assert proc.returncode == 2 and f"{bad}:2" in proc.stderr and "wnids" in proc.stderr
    proc = run_cli("dist_data.laionet", "similarty", f"--df_path={bad}", nproc=0, check=False)
    assert proc.returncode == 2 and "did you mean 'similarity'" in proc.stderr


# ---------------------------------------------------------------- arrange: img2dataset's real output

def tar_members(path: str) -> dict[str, bytes]:
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}


def test_arrange_places_every_downloaded_image(tmp_path):
    meta = read(I2D_URLS)
    run_cli("dist_data.laionet", "arrange", f"--dataset_path={I2D}/{{00000..00002}}.tar",
            f"--metadata_path={I2D_URLS}", f"--target_data_path={tmp_path / 'img'}", "--number_sample_per_shard=4",
            f"--output_dir={tmp_path / 'A'}", f"--target_df_path={tmp_path / 'laionet.parquet'}", nproc=2)
    sources = {}
    for s in ("00000", "00001", "00002"):
        for name, data in tar_members(f"{I2D}/{s}.tar").items():
            if name.endswith(".json"):
                info = json.loads(data)
                sources[info["laion_index"]] = (info["wnid"], tar_members(f"{I2D}/{s}.tar")[name[:-5] + ".jpg"])
    assert len(sources) == 9  # row 6 failed to download
    for index, (wnid, data) in sources.items():
        assert (tmp_path / "img" / wnid / f"{index}.jpg").read_bytes() == data
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "img")) == 9
    success = read(tmp_path / "laionet_success9.parquet")
    pd.testing.assert_frame_equal(success, meta.drop(index=6).reset_index(drop=True))
    stats = json.loads((tmp_path / "A" / "stats.json").read_text())["counts"]
    assert stats["kept"] == 9 and stats["dropped"] == {"failed_to_download": 1, "not_in_any_shard": 0}

    # webdataset out: class order, readable by webdataset
    run_cli("dist_data.laionet", "arrange", f"--dataset_path={I2D}", f"--metadata_path={I2D_URLS}",
            f"--target_data_path={tmp_path / 'wds'}", "--number_sample_per_shard=4", "--output_format=webdataset",
            "--samples_per_tar=4", f"--output_dir={tmp_path / 'W'}", nproc=0)
    wds = pytest.importorskip("webdataset")
    tars = sorted(str(p) for p in (tmp_path / "wds").glob("*.tar"))
    assert len(tars) == 3
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    order = sorted(sources, key=lambda i: (WNIDS.index(sources[i][0]), i))
    assert [int(s["__key__"]) for s in samples] == order
    assert [s["jpg"] for s in samples] == [sources[i][1] for i in order]
    assert [int(s["cls"]) for s in samples] == [WNIDS.index(sources[i][0]) for i in order]
    # re-sharded with --overwrite into the same target: only the new tars, each sample once
    run_cli("dist_data.laionet", "arrange", f"--dataset_path={I2D}", f"--metadata_path={I2D_URLS}",
            f"--target_data_path={tmp_path / 'wds'}", "--number_sample_per_shard=4", "--output_format=webdataset",
            "--samples_per_tar=2", f"--output_dir={tmp_path / 'W'}", "--overwrite", nproc=0)
    tars = sorted(str(p) for p in (tmp_path / "wds").glob("*.tar"))
    assert len(tars) == 5
    assert [int(s["__key__"]) for s in wds.WebDataset(tars, shardshuffle=False)] == order

    # a wrong samples-per-shard is caught by the URLs, not silently misfiled
    proc = run_cli("dist_data.laionet", "arrange", f"--dataset_path={I2D}", f"--metadata_path={I2D_URLS}",
                   f"--target_data_path={tmp_path / 'x'}", "--number_sample_per_shard=5",
                   f"--output_dir={tmp_path / 'X'}", nproc=0, check=False)
    assert proc.returncode == 2 and "number_sample_per_shard" in proc.stderr


def test_similarity_on_a_table_with_no_rows_is_one_line_before_any_embedding(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"TEXT": pa.array([], pa.string()), "wnids": pa.array([], pa.list_(pa.string()))}),
                   tmp_path / "empty.parquet")
    proc = run_cli("dist_data.laionet", "similarity", f"--df_path={tmp_path / 'empty.parquet'}",
                   f"--output_dir={tmp_path / 'S'}", "--noprogress", nproc=0, check=False)
    assert proc.returncode == 2 and "no rows to score" in proc.stderr and "Traceback" not in proc.stderr
    assert "embed" not in proc.stderr  # it stopped before the class texts were embedded


# ---------------------------------------------------------------- LAIONet's own rule (--rule=laionet)

def laionet_synsets_file() -> str:
    """LAIONet's ILSVRC2012_synsets.txt: ``id: lemmas`` per class, as the original repository ships it
    (ImageNet's lemmas; no construction crane; Siberian husky as n02112837)."""
    lines = ["id: lemmas"] + [f"{'n02112837' if c.wnid == 'n02110185' else c.wnid}: {', '.join(c.lemmas)}"
                              for c in CLASSES if c.wnid != "n03126707"]
    return "\n".join(lines)


def label_laion_reference(synsets: str):
    """label_laion.py restated on its own terms: the lemma2wnid of its preprocessing (a lemma counts when
    it is written once in the whole list), then per caption string.punctuation -> spaces and
    ' ' + lemma + ' ' searched in ' ' + caption + ' ' for every lemma."""
    pairs = [line.split(": ", 1) for line in synsets.splitlines()[1:]]
    written = [lemma for _, lemmas in pairs for lemma in lemmas.split(", ")]
    lemma2wnid = {lemma: wnid for wnid, lemmas in pairs for lemma in lemmas.split(", ") if written.count(lemma) == 1}
    translation = str.maketrans(string.punctuation, " " * len(string.punctuation))

    def label(caption: str) -> set[str]:
        text = " " + caption.translate(translation) + " "
        return {wnid for lemma, wnid in lemma2wnid.items() if " " + lemma + " " in text}

    return lemma2wnid, label


LAIONET_EDGES = ["My Siberian husky", "my siberian husky", "a crane lifts steel", "Cardigan puppy", "knit cardigan",
                 "a T-shirt", "tee shirt", "tee  shirt", "husky\u2019s coat", "husky\tdog", "an R.V.", "RV park",
                 "goldfish,goldfish!", "jack-o'-lantern", "Jack", "rave at the R-V", ""]


def test_laionet_rule_equals_label_laion_py_on_real_text():
    synsets = laionet_synsets_file()
    assert len(synsets) == 32668 and synsets.count("\n") == 999  # the original file's size and classes
    lemma2wnid, reference = label_laion_reference(synsets)
    from dist_data.caption.classes import laionet_class_list

    theirs = laionet_class_list()
    matcher = LaionetMatcher([lemmas for _, lemmas in theirs])
    assert set(matcher.lemmas) == set(lemma2wnid) and len(matcher.never) == 64 and "T-shirt" in matcher.never
    captions = real_captions(1500) + LAIONET_EDGES
    got = [{theirs[c][0] for c in matcher.match(t)} for t in captions]
    assert got == [reference(t) for t in captions]
    assert sum(map(bool, got)) > 500
    edge = dict(zip(LAIONET_EDGES, got[-len(LAIONET_EDGES):]))
    assert edge["My Siberian husky"] == {"n02112837", "n02109961"}  # its id of Siberian husky, and husky
    assert edge["my siberian husky"] == {"n02109961"}  # case: husky (Eskimo dog) only
    assert edge["a crane lifts steel"] == {"n02012849"}  # the bird: no construction crane in its list
    assert edge["Cardigan puppy"] == {"n02113186"} and edge["knit cardigan"] == {"n02963159"}
    assert edge["a T-shirt"] == set() and edge["tee shirt"] == {"n03595614"} and edge["tee  shirt"] == set()
    assert edge["husky\u2019s coat"] == set() and edge["husky\tdog"] == set() and edge["an R.V."] == set()
    # the default rule on the same captions: case, separators and punctuated lemmas all count
    ours = LemmaMatcher([c.lemmas for c in CLASSES], unique_only=True)
    label = {c.wnid: c.label for c in CLASSES}
    assert ours.match("my siberian husky") == (label["n02109961"], label["n02110185"])
    assert ours.match("a T-shirt") == (label["n03595614"],) and ours.match("an R.V.") == (label["n04065272"],)
    assert ours.match("a crane lifts steel") == ()  # shared by two of the 1,000 classes


def test_laionet_rule_end_to_end_and_its_husky_id_read_downstream(tmp_path, model):
    rows = [{"TEXT": t, "URL": f"https://img.example.org/{i}.jpg"} for i, t in
            enumerate(LAIONET_EDGES + real_captions(300))]
    shards = write_parquet_shards(str(tmp_path / "laion"), rows, n_shards=2)
    run_cli("dist_data.laionet", "label", f"--laion={shards}", f"--output_dir={tmp_path / 'L'}", "--rule=laionet",
            "--block_rows=128", nproc=0)
    out = read(tmp_path / "L" / "laion_labeled.parquet")
    _, reference = label_laion_reference(laionet_synsets_file())
    want = [(i, sorted(reference(r["TEXT"]), key=lambda w: label_of(w))) for i, r in enumerate(rows)
            if reference(r["TEXT"])]
    assert [(i, list(w)) for i, w in zip(out["laion_index"], out["wnids"])] == want
    lists = json.loads((tmp_path / "L" / "wnid_to_laion_indices.json").read_text())
    # every class of the 1,000 (as the docs promise), construction crane (not in LAIONet's list) with no rows
    assert len(lists) == 1000 and lists["n03126707"] == [] and lists["n02112837"] == [0]
    freq = (tmp_path / "L" / "class_frequency.txt").read_text().splitlines()
    assert freq[label_of("n02110185")].endswith("\t1") and freq[label_of("n03126707")].endswith("\t0")
    # similarity reads LAIONet's id of Siberian husky as the class (its "Siberian husky" always names husky
    # too, so the row is given its one class here)
    pq.write_table(pa.Table.from_pylist([{"TEXT": "Siberian husky pulling a sled", "wnids": ["n02112837"],
                                          "laion_index": 7}]), tmp_path / "husky.parquet")
    run_cli("dist_data.laionet", "similarity", f"--df_path={tmp_path / 'husky.parquet'}",
            f"--output_dir={tmp_path / 'S'}", nproc=0)
    sims = read(tmp_path / "S" / "laion_similarity.parquet")
    assert sims[laion.QUERY_WNID].tolist() == ["n02110185"] and sims[laion.SIMILARITY].iloc[0] > 0.5
    # and the default rule's output is what it was: the matcher's verdict
    run_cli("dist_data.laionet", "label", f"--laion={shards}", f"--output_dir={tmp_path / 'D'}", nproc=0)
    ours = LemmaMatcher([c.lemmas for c in CLASSES], unique_only=True)
    default = read(tmp_path / "D" / "laion_labeled.parquet")
    assert [list(w) for w in default["wnids"]] == [[WNIDS[c] for c in ours.match(r["TEXT"])] for r in rows
                                                   if r["TEXT"] and ours.match(r["TEXT"])]


def label_of(wnid: str) -> int:
    from dist_data.caption.classes import wnid_to_label

    return wnid_to_label()[wnid]


def test_laionet_rule_refuses_every_lemma(tmp_path):
    proc = run_cli("dist_data.laionet", "label", f"--laion={tmp_path}", "--rule=laionet", "--nounique_lemmas",
                   f"--output_dir={tmp_path / 'o'}", nproc=0, check=False)
    assert proc.returncode == 2 and "--rule=laionet counts only lemmas written once" in proc.stderr


def test_docs_table_of_the_rule_differences_is_the_scripts_output():
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))
    import laionet_rule_differences as differences

    result = differences.differences(differences.read_texts(differences.SAMPLE))
    with open(os.path.join(os.path.dirname(HERE), "docs", "laionet.md"), encoding="utf-8") as f:
        readme = f.read()
    table = "\n".join("  " + line for line in differences.table(result).splitlines())
    assert table in readme
    assert result["only_default"]["case"] > 0 and result["only_laionet"]["class_list"] > 0
