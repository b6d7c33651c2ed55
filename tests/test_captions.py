"""dist_data.captions on real text: the class table against WordNet and nltk, the lemma matcher
against a brute-force per-lemma regex, every caption-variant flag combination against a plain
re-statement of the rules, subsets and trim-tail against numpy/pandas, and the commands end to end
(open_clip's reader, 1 vs 2 ranks, resume, bad rows)."""

from __future__ import annotations

import collections
import csv
import itertools
import json
import os
import random
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from caption_data import incaps_rows, real_captions, write_json
from conftest import assert_plot, run_cli
from dist_data.caption import tables
from dist_data.caption.classes import CLASS_TABLE, build_class_table, imagenet100_labels, imagenet_classes
from dist_data.caption.lemmas import LemmaMatcher
from dist_data.caption.variants import MODES, Fields, Record, make_variants, templates
from dist_data.core.wordnet import WORDNET_DIR

CLASSES = imagenet_classes()


# ---------------------------------------------------------------- the class table

def test_shipped_class_table_is_wordnet_and_imagenet_classes():
    with open(CLASS_TABLE, encoding="utf-8") as f:
        assert json.load(f) == build_class_table()
    assert [c.label for c in CLASSES] == list(range(1000))
    assert [c.wnid for c in CLASSES] == sorted(c.wnid for c in CLASSES)  # every ImageNet loader's order
    by_wnid = {c.wnid: c for c in CLASSES}
    assert by_wnid["n02110185"].lemmas == ("Siberian husky",) and by_wnid["n02110185"].label == 250
    assert by_wnid["n01440764"].name == "tench" and CLASSES[21].name == "kite (bird of prey)"
    # the counts the issue states: 1,842 distinct lemmas, 1,824 of them in exactly one synset
    owners = collections.Counter(lemma for c in CLASSES for lemma in set(c.lemmas))
    assert len(owners) == 1842 and sum(n == 1 for n in owners.values()) == 1824


def test_the_original_class_names_are_clip_beyond_tails_unique_list():
    """The default names are clip-beyond-tail's (its frequency file's first column): open_clip's list with
    the four names that repeat there made unique; ``clip`` is open_clip's list as installed."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from dist_data.caption.classes import class_names

    original, clip = class_names("original"), class_names("clip")
    assert len(original) == len(set(original)) == 1000
    assert clip == list(IMAGENET_CLASSNAMES)
    assert {i: (original[i], clip[i]) for i in range(1000) if original[i] != clip[i]} == {
        27: ("eft", "newt"), 638: ("maillot", "tights"), 744: ("projectile", "missile"), 836: ("sunglass", "sunglasses")}
    assert (original[282], original[472], original[998]) == ("tiger cat", "canoe", "corn cob")
    assert [c.name for c in CLASSES] == original
    assert len(set(clip)) == 998  # open_clip's own list names two pairs of classes alike


def test_a_class_names_file_is_checked_line_by_line(tmp_path):
    from dist_data.caption.classes import class_names, class_names_problem

    good = tmp_path / "names.txt"
    good.write_text("# my names\n" + "".join(f"class {i}\t{i}\n" for i in range(1000)))  # a frequency file works
    assert class_names_problem(str(good)) is None and class_names(str(good))[7] == "class 7"
    short = tmp_path / "short.txt"
    short.write_text("".join(f"class {i}\n" for i in range(999)))
    assert "999 class names" in class_names_problem(str(short))
    twice = tmp_path / "twice.txt"
    twice.write_text("".join(f"class {min(i, 998)}\n" for i in range(1000)))
    assert class_names_problem(str(twice)) == (f"{twice}:1000: 'class 998' is also the name on line 999: the names "
                                               f"must be unique")
    assert "must be original or clip" in class_names_problem("imagenet")


def test_class_table_agrees_with_nltk(tmp_path):
    """nltk's own WordNet reader over the same database files gives the same lemmas and definitions."""
    nltk = pytest.importorskip("nltk")
    if not os.path.exists(os.path.join(WORDNET_DIR, "index.sense")):
        pytest.skip("nltk needs index.sense: apt-get install wordnet-sense-index")
    root = tmp_path / "corpora" / "wordnet"
    root.mkdir(parents=True)
    for name in os.listdir(WORDNET_DIR):
        if name.startswith(("data.", "index.")) or name.endswith(".exc"):
            shutil.copy(os.path.join(WORDNET_DIR, name), root / name)
    lexnames = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
                "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
                "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
                "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
                "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
                "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
                "adj.ppl").split()
    pos = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
    (root / "lexnames").write_text("".join(f"{i:02d}\t{n}\t{pos[n.split('.')[0]]}\n" for i, n in enumerate(lexnames)))
    nltk.data.path.insert(0, str(tmp_path))
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    wn = WordNetCorpusReader(str(root), None)
    for c in CLASSES:
        synset = wn.synset_from_pos_and_offset("n", int(c.wnid[1:]))
        assert tuple(n.replace("_", " ") for n in synset.lemma_names()) == c.lemmas, c
        assert synset.definition() == c.definition, c


def test_imagenet100_is_cmc_list():
    labels = imagenet100_labels()
    assert len(labels) == 100 == len(set(labels)) and labels == sorted(labels)
    wnids = {CLASSES[i].wnid for i in labels}
    # the first classes of CMC's imagenet100.txt
    assert {"n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831"} <= wnids


# ---------------------------------------------------------------- the lemma matcher

class BruteForce:
    """One regex per lemma on the raw lowercased caption: its words separated by any non-alphanumeric
    run, not preceded or followed by a letter or digit."""

    def __init__(self, class_lemmas, unique_only: bool):
        owners = collections.defaultdict(set)
        for c, lemmas in enumerate(class_lemmas):
            for lemma in lemmas:
                owners[tuple(w for w in re.split(r"[\W_]+", lemma.lower()) if w)].add(c)
        self.patterns = [(re.compile(r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, words)) + r"(?![^\W_])"), cs)
                         for words, cs in owners.items() if not unique_only or len(cs) == 1]
        self.memo: dict[str, tuple[int, ...]] = {}

    def __call__(self, caption: str) -> tuple[int, ...]:
        if caption not in self.memo:
            text = caption.lower()
            self.memo[caption] = tuple(sorted({c for p, cs in self.patterns if p.search(text) for c in cs}))
        return self.memo[caption]


_REFERENCES: dict[bool, BruteForce] = {}


def brute_force(caption: str, unique_only: bool) -> tuple[int, ...]:
    if unique_only not in _REFERENCES:
        _REFERENCES[unique_only] = BruteForce([c.lemmas for c in CLASSES], unique_only)
    return _REFERENCES[unique_only](caption)


EDGE_CAPTIONS = [
    "My Siberian HUSKY in the snow",  # Siberian husky and husky (Eskimo dog)
    "hot dogs and hotdogs",  # plurals are other words
    "a Jack-o'-Lantern!!",
    "jack o lantern",
    "crane_bird at the docks; a CRANE.",  # two classes share "crane"
    "Cardigan",  # the corgi and the sweater (case differs in WordNet)
    "the plane made a smooth landing",  # "plane" is a lemma of the carpenter's plane
    "",
    "   ",
    "goldfish,goldfish",
    "tench\u00a0fish",
    "Ünïcödé tench-like",
]


@pytest.mark.parametrize("unique_only", [False, True])
def test_matcher_equals_per_lemma_regex_on_real_text(unique_only):
    matcher = LemmaMatcher([c.lemmas for c in CLASSES], unique_only=unique_only)
    captions = real_captions(1500) + EDGE_CAPTIONS
    got = [matcher.match(t) for t in captions]
    assert got == [brute_force(t, unique_only) for t in captions]
    assert sum(bool(g) for g in got) > 500  # real text: many matches, and many non-matches
    label = {c.wnid: c.label for c in CLASSES}
    husky = matcher.match(EDGE_CAPTIONS[0])
    crane = matcher.match(EDGE_CAPTIONS[4])
    if unique_only:
        assert husky == (label["n02109961"], label["n02110185"])
        assert crane == () and matcher.match("Cardigan") == ()
    else:
        assert husky == (label["n02109961"], label["n02110185"])
        assert crane == (label["n02012849"], label["n03126707"])  # the bird and the machine
        assert len(matcher.match("Cardigan")) == 2
    assert matcher.match("hot dogs and hotdogs") == () and matcher.match("a hot dog") == (label["n07697537"],)
    # punctuation is a word boundary on both sides; "jack" alone is a lemma of the jackfruit
    assert matcher.match("jack o lantern") == matcher.match("a Jack-o'-Lantern!!") == \
        (label["n03590841"], label["n07754684"])
    assert matcher.match(EDGE_CAPTIONS[6]) == (label["n03954731"],)


def test_a_lemma_is_matched_literally_not_as_a_regex():
    """The original pasted lemmas into a regex unescaped: "R.V." (recreational vehicle) then matched
    RSVG, RXVT, rave and revs."""
    rv = next(c.label for c in CLASSES if c.wnid == "n04065272")
    assert "R.V." in CLASSES[rv].lemmas
    matcher = LemmaMatcher([c.lemmas for c in CLASSES], unique_only=False)
    wrong = ["RSVG renders the icons", "RXVT terminal", "a rave in Berlin", "high revs"]
    assert all(re.search(r"\bR.V.\b", t, re.IGNORECASE) for t in wrong)  # the original's verdict
    assert all(rv not in matcher.match(t) for t in wrong)
    assert all(rv in matcher.match(t) for t in ["an R.V. by the lake", "RV park", "a recreational vehicle"])


# ---------------------------------------------------------------- caption variants

def reference_variants(rows, use_title, use_tags, use_description, append_cname, use_synset, mode, shuffle, seed,
                       root):
    """The rules of the variants command, restated plainly."""
    rng = random.Random(seed)
    rows = list(rows)
    if shuffle:
        rng.shuffle(rows)
    fixed = {"cname": "{}", "a+cname": "a {}", "photo": "a photo of a {}"}
    by_wnid = {c.wnid: c for c in CLASSES}
    out = []
    for r in rows:
        c = by_wnid.get(r["wnid"])
        if c is None:
            continue
        text = ""
        for use, value in ((use_title, r["title"]), (use_tags, " ".join(r["tags"])),
                           (use_description, r["description"])):
            if use and value != "":
                text = value if text == "" else text + " " + value
        text = text.replace("\n", " ").replace("\r", " ").replace("\t", " ")
        if append_cname:
            template = rng.choice(templates("openai80")) if mode == "openai80" else fixed[mode].format
            name = rng.choice(c.lemmas) if use_synset else c.name
            text = template(name) + (" " + text if text else "")
        if text.strip(" ") == "":
            continue
        out.append((f"{root}/train/{r['wnid']}/{r['filename']}", c.label, text))
    return out


def _combinations():
    for title, tags, desc, cname in itertools.product([False, True], repeat=4):
        if not (title or tags or desc or cname):
            continue
        for synset, mode in ([(False, "cname")] if not cname else itertools.product([False, True], MODES)):
            yield title, tags, desc, cname, synset, mode


def test_every_variant_flag_combination_exact():
    rows = incaps_rows()
    records = [Record(r["filename"], r["wnid"], r["title"], tuple(r["tags"]), r["description"]) for r in rows]
    names = set()
    combos = list(_combinations())
    assert len(combos) == 71  # 7 field choices alone + 8 (none included) with the class text x 2 lemma choices x 4 modes
    for i, (title, tags, desc, cname, synset, mode) in enumerate(combos):
        shuffle = i % 2 == 0
        fields = Fields(title, tags, desc, cname, synset, mode)
        assert fields.problems() == []
        got = make_variants(records, fields, "/data/imagenet", seed=i, shuffle=shuffle)
        want = reference_variants(rows, title, tags, desc, cname, synset, mode, shuffle, i, "/data/imagenet")
        assert got.rows == want, (title, tags, desc, cname, synset, mode)
        assert got.unknown_wnid == 1 and got.empty + len(got.rows) == len(rows) - 1
        assert (got.empty > 0) == (not cname)  # blank rows are dropped only without the class text
        names.add(fields.file_name(len(got.rows)))
    assert len(names) == len(combos)
    assert Fields(True, True, True, True, False, "cname").file_name(448896) == \
        "incaps_title_tags_description_cname_448896.tsv"  # the name clip-beyond-tail's training scripts read
    assert Fields(False, False, False, True, True, "openai80").file_name(7) == "incaps_openai80_synset_7.tsv"


def test_variant_rules_by_hand():
    husky = next(c for c in CLASSES if c.wnid == "n02110185")
    rec = Record("x.JPEG", husky.wnid, "My dog\nat home", ("sled", "snow"), "Runs\tfast")
    one = make_variants([rec], Fields(True, True, True, True, False, "photo"), "/in", 0, False).rows
    assert one == [("/in/train/n02110185/x.JPEG", 250, "a photo of a Siberian Husky My dog at home sled snow Runs fast")]
    blank = Record("y.JPEG", husky.wnid, "", (), "")
    assert make_variants([blank], Fields(True, False, False, False, False, "cname"), "/in", 0, False).rows == []
    assert make_variants([blank], Fields(True, False, False, True, False, "a+cname"), "/in", 0, False).rows == \
        [("/in/train/n02110185/y.JPEG", 250, "a Siberian Husky")]
    drawn = {make_variants([rec], Fields(False, False, False, True, False, "openai80"), "/in", s, False).rows[0][2]
             for s in range(40)}
    assert len(drawn) > 20 and all("Siberian Husky" in d for d in drawn)  # templates differ per draw
    assert Fields(True, False, False, False, True, "cname").problems()  # --use_synset needs --append_cname
    assert Fields(True, False, False, False, False, "photo").problems()
    assert Fields(False, False, False, False, False, "cname").problems()


def trains_with_open_clip(table, want) -> None:
    """open_clip's own training dataset (``--dataset-type csv --csv-separator '\\t'``) reads our table
    as written: the image paths open, every caption comes back exactly and tokenizes as itself."""
    import dist_data  # noqa: F401 - the torchvision workaround, before open_clip imports it

    from open_clip import get_tokenizer
    from open_clip_train.data import CsvDataset
    from PIL import Image

    for filepath, label, _ in want[:20]:  # real image files where the table points
        os.makedirs(os.path.dirname(filepath), exist_ok=True)
        Image.new("RGB", (8, 8), (label % 256, 0, 0)).save(filepath)
    tokenizer = get_tokenizer("RN50")
    ds = CsvDataset(str(table), lambda im: im.size, img_key="filepath", caption_key="caption", sep="\t",
                    tokenizer=tokenizer)
    assert len(ds) == len(want) and ds.captions == [w[2] for w in want]
    for i in range(20):
        size, tokens = ds[i]
        assert size == (8, 8) and tokens.tolist() == tokenizer([want[i][2]])[0].tolist()


def test_variants_command_end_to_end(tmp_path):
    rows = incaps_rows()
    captions = write_json(str(tmp_path / "imagenet_captions.json"), rows)
    out = tmp_path / "v"
    root = str(tmp_path / "imagenet")
    flags = [f"--captions={captions}", f"--image_root={root}", "--use_title", "--use_tags",
             "--use_description", "--append_cname", "--mode=openai80", "--shuffle", "--seed=0", f"--output_dir={out}"]
    run_cli("dist_data.captions", "variants", *flags, nproc=0)
    name = f"incaps_title_tags_description_openai80_{len(rows) - 1}.tsv"
    # open_clip's CsvDataset: pd.read_csv(path, sep="\t"), then the filepath and caption columns
    df = pd.read_csv(out / name, sep="\t")
    want = reference_variants(rows, True, True, True, True, False, "openai80", True, 0, root)
    assert list(df.columns) == ["filepath", "label", "caption"]
    assert list(df.itertuples(index=False, name=None)) == want
    freq = pd.read_csv(out / "class_frequency.txt", sep="\t", header=None, names=["classname", "count"],
                       keep_default_na=False)
    assert list(freq.classname) == [c.name for c in CLASSES] and freq.classname[282] == "tiger cat"
    assert freq["count"].tolist() == np.bincount([w[1] for w in want], minlength=1000).tolist()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["kept"] == len(want) and stats["counts"]["dropped"]["not_an_imagenet_1k_class"] == 1
    trains_with_open_clip(out / name, want)
    before = (out / name).read_bytes()
    again = run_cli("dist_data.captions", "variants", *flags, nproc=0)
    assert "already complete" in again.stderr and (out / name).read_bytes() == before
    # open_clip's names: the frequency file and the captions name the classes as open_clip does
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    few = rows[:6] + [{**rows[0], "filename": f"{c}.JPEG", "wnid": CLASSES[c].wnid} for c in (744, 836)]
    few_path = write_json(str(tmp_path / "few.json"), few)
    for names, folder in (("original", "ori"), ("clip", "clip")):
        run_cli("dist_data.captions", "variants", f"--captions={few_path}", f"--image_root={root}", "--use_title",
                "--append_cname", "--mode=cname", f"--class_names={names}", f"--output_dir={tmp_path / folder}", nproc=0)
    clip_freq = (tmp_path / "clip" / "class_frequency.txt").read_text().splitlines()
    assert [line.rsplit("\t", 1)[0] for line in clip_freq] == list(IMAGENET_CLASSNAMES)
    table = {f: pd.read_csv(next((tmp_path / f).glob("incaps_*.tsv")), sep="\t") for f in ("ori", "clip")}
    changed = table["ori"].caption != table["clip"].caption
    assert sorted(table["ori"].label[changed]) == [744, 836]  # projectile/missile, sunglass/sunglasses
    assert table["ori"].caption[table["ori"].label == 744].iloc[0].startswith("projectile")

    # a bad row: an error naming file and item, or set aside with --on_bad_rows=skip
    bad = rows[:5] + [{"filename": "z.JPEG", "wnid": "n01440764", "title": 3, "tags": [], "description": ""}]
    bad_path = write_json(str(tmp_path / "bad.json"), bad)
    proc = run_cli("dist_data.captions", "variants", f"--captions={bad_path}", "--image_root=/r", "--use_title",
                   f"--output_dir={tmp_path / 'b'}", nproc=0, check=False)
    assert proc.returncode == 2 and f"{bad_path}:6" in proc.stderr and "'title' is int" in proc.stderr
    run_cli("dist_data.captions", "variants", f"--captions={bad_path}", "--image_root=/r", "--use_title",
            "--on_bad_rows=skip", f"--output_dir={tmp_path / 'b'}", nproc=0)
    rejects = [json.loads(line) for line in (tmp_path / "b" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(6, "'title' is int, expected a string")]
    proc = run_cli("dist_data.captions", "variants", f"--captions={captions}", "--image_root=/r", "--use_titel",
                   "--use_synset", f"--output_dir={tmp_path / 'c'}", nproc=0, check=False)
    assert proc.returncode == 2 and "did you mean --use_title" in proc.stderr


# ---------------------------------------------------------------- subsets and trim-tail

def _table(tmp_path, n_rows=600, seed=0):
    """A caption table over 1,000 classes with a long tail (real captions, duplicate-free filepaths)."""
    rng = np.random.default_rng(seed)
    captions = real_captions(n_rows)
    labels = np.minimum(rng.zipf(1.6, size=n_rows) - 1, 999)
    labels = rng.permutation(1000)[labels]
    rows = [(f"/data/train/{CLASSES[l].wnid}/{i:05d}.JPEG", int(l), tables.one_line(captions[i]))
            for i, l in enumerate(labels)]
    path = tmp_path / f"incaps_title_{n_rows}.tsv"
    tables.write_tsv(str(path), ["filepath", "label", "caption"], rows)
    freq = tmp_path / "class_frequency.txt"
    freq.write_text("".join(f"{c.name}\t{n}\n" for c, n in zip(CLASSES, np.bincount(labels, minlength=1000))))
    return path, freq, rows


def test_subsets_match_numpy_and_pandas(tmp_path):
    path, freq, rows = _table(tmp_path)
    np.random.seed(7)
    assert tables.random_classes(1000, 100, 7) == sorted(np.random.choice(1000, 100, replace=False).tolist())
    labels = np.array([r[1] for r in rows])
    classes = sorted(set(labels.tolist()))[:12]
    keep, new = tables.select_classes(labels, classes)
    assert keep.tolist() == [i for i, l in enumerate(labels) if l in classes]
    assert new.tolist() == [classes.index(labels[i]) for i in keep]
    df = pd.read_csv(path, sep="\t")
    want = df.sort_values(by="filepath").sample(n=50, random_state=3)
    assert tables.sample_rows(df.filepath.tolist(), 50, 3).tolist() == want.index.tolist()

    out = tmp_path / "s"
    run_cli("dist_data.captions", "subsets", f"--df_path={path}", f"--freq_path={freq}", "--use_in100",
            f"--output_dir={out}", nproc=0)
    in100 = imagenet100_labels()
    expect = df[df.label.isin(in100)].copy()
    expect["label_ori"] = expect["label"]
    expect["label"] = expect["label_ori"].map({c: i for i, c in enumerate(in100)})
    got = pd.read_csv(out / f"in100caps_title_{len(expect)}.tsv", sep="\t")
    assert got.values.tolist() == expect.values.tolist() and list(got.columns) == list(expect.columns)
    sub_freq = pd.read_csv(out / "class_frequency.txt", sep="\t", header=None)
    assert sub_freq[0].tolist() == [CLASSES[c].name for c in in100]
    assert sub_freq[1].tolist() == np.bincount(got.label, minlength=100).tolist()

    out2 = tmp_path / "s2"  # k classes, then n rows of them, from the subset's own class-frequency file
    run_cli("dist_data.captions", "subsets", f"--df_path={out / f'in100caps_title_{len(expect)}.tsv'}", f"--freq_path={out / 'class_frequency.txt'}",
            "--k=20", "--n=5", "--seed=1", f"--output_dir={out2}", nproc=0)
    picked = tables.random_classes(100, 20, 1)
    inner = got[got.label.isin(picked)].copy()
    inner["label"] = inner["label"].map({c: i for i, c in enumerate(picked)})  # label_ori stays the 1,000-class id
    inner = inner.sort_values(by="filepath", kind="stable").sample(n=5, random_state=1)
    got2 = pd.read_csv(out2 / "in20caps_title_5.tsv", sep="\t")
    assert got2.values.tolist() == inner.values.tolist()
    assert set(got2.label_ori) <= set(in100)
    proc = run_cli("dist_data.captions", "subsets", f"--df_path={path}", f"--output_dir={tmp_path / 'x'}", nproc=0,
                   check=False)
    assert proc.returncode == 2 and "choose --k, --use_in100 or --n" in proc.stderr


def test_trim_tail(tmp_path):
    path, freq, rows = _table(tmp_path)
    labels = np.array([r[1] for r in rows])
    counts = np.bincount(labels, minlength=1000)
    lastk = 990  # past the empty classes, into the classes with rows
    keep, tail = tables.trim_tail(labels, 1000, lastk, 1, seed=5)
    order = sorted(range(1000), key=lambda c: (counts[c], c))
    assert tail.tolist() == order[:lastk]
    after = np.bincount(labels[keep], minlength=1000)
    for c in range(1000):
        assert after[c] == (min(counts[c], 1) if c in set(tail.tolist()) else counts[c])
    assert keep.tolist() == sorted(keep.tolist())
    assert np.array_equal(tables.trim_tail(labels, 1000, lastk, 1, seed=5)[0], keep)
    assert not np.array_equal(tables.trim_tail(labels, 1000, lastk, 1, seed=6)[0], keep)

    out = tmp_path / "t"
    run_cli("dist_data.captions", "trim_tail", f"--df_path={path}", f"--freq_path={freq}", f"--lastk={lastk}",
            "--ceil=1", "--seed=5", f"--output_dir={out}", nproc=0)
    got = pd.read_csv(out / f"incaps_title_tail{lastk}ceil1.tsv", sep="\t")
    assert got.values.tolist() == pd.read_csv(path, sep="\t").iloc[keep].values.tolist()
    assert pd.read_csv(out / "class_frequency.txt", sep="\t", header=None)[1].tolist() == after.tolist()
    stats = json.loads((out / "stats.json").read_text())["counts"]
    assert stats["dropped"]["over_tail_ceiling"] == len(rows) - len(keep) > 0
    assert_plot(out / "class_frequency.png", "C3")  # the trimmed tail marked


def test_tsv_round_trip_with_quotes(tmp_path):
    rows = [("/a b/x.jpg", 1, 'He said "hi"'), ('/q"/y.jpg', 2, "plain"), ("/z.jpg", 3, "tab\tinside")]
    path = str(tmp_path / "t.tsv")
    tables.write_tsv(path, ["filepath", "label", "caption"], rows)
    df = pd.read_csv(path, sep="\t")
    assert list(df.itertuples(index=False, name=None)) == rows
    assert tables.read_tsv(path, 4).rows == [[a, str(b), c] for a, b, c in rows]


# ---------------------------------------------------------------- label

def _captions_file(tmp_path, n=1500):
    captions = real_captions(n)
    path = tmp_path / "yfcc.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, caption in enumerate(captions):
            f.write(json.dumps({"filepath": f"yfcc/{i:06d}.jpg", "caption": caption}) + "\n")
        f.write(json.dumps({"filepath": "yfcc/empty.jpg", "caption": None}) + "\n")
    return path, captions


@pytest.mark.parametrize("unique", [False, True])
def test_label_end_to_end_ranks_and_resume(tmp_path, unique):
    path, captions = _captions_file(tmp_path)
    flags = [f"--captions={path}", "--block_rows=500"] + (["--unique_lemmas"] if unique else [])
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("dist_data.captions", "label", *flags, f"--output_dir={one}", nproc=0, env={"OMP_NUM_THREADS": "1"})
    want = [(f"yfcc/{i:06d}.jpg", tables.one_line(t), c) for i, t in enumerate(captions)
            for c in brute_force(t, unique)]
    got = pd.read_csv(one / "yfcc_cls.tsv", sep="\t", keep_default_na=False)
    assert list(got.columns) == ["filepath", "caption", "label"]
    assert list(got.itertuples(index=False, name=None)) == want
    freq = pd.read_csv(one / "class_frequency.txt", sep="\t", header=None)
    assert freq[1].tolist() == np.bincount([w[2] for w in want], minlength=1000).tolist()
    stats = json.loads((one / "stats.json").read_text())
    counts = stats["counts"]
    matched = sum(bool(brute_force(t, unique)) for t in captions)
    assert stats["examples"]["unmatched_captions"] == [t[:200] for t in captions if not brute_force(t, unique)][:10]
    assert counts["captions_matched"] == matched and counts["kept"] == len(want)
    assert counts["dropped"] == {"no_class_lemma": len(captions) - matched, "empty_caption": 1, "not_sampled": 0}
    assert sum(counts["per_class"].values()) == len(want)
    if unique:
        return
    run_cli("dist_data.captions", "label", *flags, f"--output_dir={two}", nproc=2)
    for name in ("yfcc_cls.tsv", "class_frequency.txt"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    # a run that lost its end and two blocks resumes from the others and gives the same bytes
    before = (one / "yfcc_cls.tsv").read_bytes()
    for name in ("_SUCCESS", "yfcc_cls.tsv", "stats.json", "cache/label/block-0000002.json",
                 "cache/label/block-0000005.tsv"):
        os.remove(one / name)
    run_cli("dist_data.captions", "label", *flags, f"--output_dir={one}", nproc=0)
    assert (one / "yfcc_cls.tsv").read_bytes() == before
    n_blocks = -(-(len(captions) + 1) // 500)
    assert json.loads((one / "stats.json").read_text())["counts"]["cached_blocks"] == n_blocks - 2


def test_label_bad_rows(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"filepath": "a.jpg", "caption": "a goldfish"}\n{"filepath": "b.jpg", "caption": 7}\n'
                    '{"filepath": "c.jpg"}\nnot json\n')
    proc = run_cli("dist_data.captions", "label", f"--captions={path}", f"--output_dir={tmp_path / 'o'}", nproc=0,
                   check=False)
    assert proc.returncode == 2 and f"{path}:2" in proc.stderr and "'caption' is int" in proc.stderr
    run_cli("dist_data.captions", "label", f"--captions={path}", "--on_bad_rows=skip", f"--output_dir={tmp_path / 's'}",
            nproc=0)
    rejects = [json.loads(x) for x in (tmp_path / "s" / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3, 4]
    assert list(csv.reader(open(tmp_path / "s" / "c_cls.tsv"), delimiter="\t")) == \
        [["filepath", "caption", "label"], ["a.jpg", "a goldfish", "1"]]
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())["counts"]
    assert sum(stats["rejected"].values()) == 3 and stats["per_class"] == {"n01443537": 1}
