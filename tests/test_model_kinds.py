"""The model's own vectors for every kind of model (:mod:`model_kinds`): the engine's embedding,
with and without ``--batch_tokens``, equals sentence-transformers' ``encode_query`` /
``encode_document`` / ``encode`` on real WordNet text; a kind the fast path cannot reproduce goes
through ``encode`` and the log says why; verbs end to end against ``mine_hard_negatives`` and
``encode``."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import run_cli, wordnet_pairs, write_jsonl
from dist_data.core.embed import BlockEmbedder, fast_path_problem, load_model, resolve_prompt, spec_for
from dist_data.text.wordnet import iter_synsets
from model_kinds import KINDS, build
from test_filter_e2e import reference_keep
from test_mine import MINE_FLAGS, assert_same_negatives, read_triplets, reference_mining, scoring_cross_encoder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def kinds_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("kinds"))


@pytest.fixture(scope="module")
def texts():
    """Real definitions, lemmas and examples; some longer than every model's length (48 tokens)."""
    synsets = [s for s in iter_synsets(pos="n")][:800:4]
    out = [s.definition for s in synsets[:60]] + [s.lemmas[0].replace("_", " ") for s in synsets[60:80]]
    out += [" ".join(s.definition for s in synsets[i:i + 6]) for i in range(80, 200, 6)]  # 6 definitions: ~70+ tokens
    return out


def reference(folder: str, load: dict):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device="cpu", **load).float().eval()


def encoded(ref, role: str, texts: list[str]) -> np.ndarray:
    encode = getattr(ref, f"encode_{role}") if role else ref.encode
    return encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_gives_its_own_vectors_with_and_without_batch_tokens(kind, kinds_root, texts):
    folder = build(kind, kinds_root)
    load = {"trust_remote_code": True} if kind == "remote_code" else {}
    model = load_model(folder, CPU, load=load)
    ref = reference(folder, load)
    assert len(model.tokenizer(texts[-1])["input_ids"]) > 48  # the long texts are truncated
    for role in ("query", "document", ""):
        want = encoded(ref, role, texts)
        prompt = resolve_prompt(model, None, None, role, "prompt") if role else None
        for budget in (0, 400):
            spec = spec_for(model, folder, None, prompt, "float32", 16, role=role, batch_tokens=budget, load=load)
            embedder = BlockEmbedder(model, spec, None)
            assert embedder.fast == (budget > 0 and role in KINDS[kind]), (role, fast_path_problem(model, spec))
            got = embedder.embed(texts, f"{kind}-{role}-{budget}")
            np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"{kind} {role or 'text'} batch_tokens={budget}")
    if kind == "router":  # each route kept its own length (5 and 64), as sentence-transformers loaded them
        assert {k: m[0].max_seq_length for k, m in model[0].sub_modules.items()} == {"query": 5, "document": 64}
    if kind == "default_prompt":
        assert spec_for(model, folder, None, None, "float32", 16).prompt == "Classify the meaning: "
    if kind == "left_truncation":
        assert model.tokenizer.truncation_side == "left"


def test_truncate_dim_keeps_the_first_dimensions_then_normalises(kinds_root, texts):
    folder = build("plain", kinds_root)
    load = {"truncate_dim": 12}
    ref = reference(folder, load)
    model = load_model(folder, CPU, load=load)
    want = ref.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    assert want.shape == (len(texts), 12)
    for budget in (0, 400):
        spec = spec_for(model, folder, None, None, "float32", 16, batch_tokens=budget, load=load)
        got = BlockEmbedder(model, spec, None).embed(texts, f"dim-{budget}")
        np.testing.assert_allclose(got, want, atol=2e-5)
        assert spec.key() != spec_for(model, folder, None, None, "float32", 16, batch_tokens=budget).key()


def _mteb_data(root, n: int = 120) -> str:
    synsets = [s for s in iter_synsets()][:n * 7:7]
    os.makedirs(root / "data" / "wn_pos", exist_ok=True)
    write_jsonl(root / "data" / "wn_pos" / "test.jsonl", [{"text": s.definition, "label": s.pos} for s in synsets])
    return str(root / "data")


@pytest.mark.parametrize("kind", ["remote_code", "chat_template", "default_prompt"])
def test_embed_mteb_writes_encodes_vectors_for_the_kind(kind, kinds_root, tmp_path):
    folder = build(kind, kinds_root)
    data = _mteb_data(tmp_path)
    flags = ["--task_type=classification", "--dataset_name=wn_pos", f"--data_path={data}", f"--model_name={folder}",
             "--batch_size=16", "--batch_tokens=400", "--noprogress"]
    trust = ["--trust_remote_code"] if kind == "remote_code" else []
    if kind == "remote_code":
        refused = run_cli("dist_data.embed_mteb", *flags, f"--save_root_path={tmp_path / 'refused'}", nproc=0,
                          check=False)
        assert refused.returncode == 2 and "--trust_remote_code" in refused.stderr.strip().splitlines()[-1]
    proc = run_cli("dist_data.embed_mteb", *flags, *trust, f"--save_root_path={tmp_path / 'out'}", nproc=0)
    if "" not in KINDS[kind]:
        assert "its texts go through its own encode" in proc.stderr
    out = tmp_path / "out" / folder.replace("/", "_") / "wn_pos"
    texts = [json.loads(line)["text"] for line in open(os.path.join(data, "wn_pos", "test.jsonl"))]
    want = encoded(reference(folder, {"trust_remote_code": True} if trust else {}), "", texts)
    np.testing.assert_allclose(np.load(out / "test.npz")["data"], want, atol=2e-5)
    if trust:
        assert json.load(open(out / "meta.json"))["args"]["trust_remote_code"] is True


@pytest.mark.parametrize("batch_tokens", [0, 400])
def test_mine_with_a_router_model_matches_mine_hard_negatives(batch_tokens, kinds_root, tmp_path):
    folder = build("router", kinds_root)
    rows = wordnet_pairs(150, seed=5)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    flags = [f for f in MINE_FLAGS if not f.startswith("--absolute_margin")]  # random weights: no margin to keep
    run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={tmp_path / 'ours'}", f"--model_name={folder}",
            f"--batch_tokens={batch_tokens}", *flags, nproc=0)
    ref = reference_mining(reference(folder, {}), [(r["query"], r["document"]) for r in rows], use_faiss=False,
                           absolute_margin=None)
    assert len(ref) > 100
    assert_same_negatives(read_triplets(tmp_path / "ours" / "mined.jsonl"), ref, "mine_hard_negatives", 0.98)


def test_cross_encoder_max_length_matches_mine_hard_negatives(model, tmp_path):
    ce = scoring_cross_encoder(str(tmp_path / "ce"), max_length=12)  # definitions are longer: the cut matters
    rows = wordnet_pairs(40, seed=3, synonyms=False)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    flags = [f"--dataset={path}", f"--cross_encoder={tmp_path / 'ce'}", "--num_negatives=2", "--range_max=8",
             "--output_scores=True", "--batch_size=32", "--noprogress"]
    run_cli("dist_data.mine", *flags, "--cross_encoder_max_length=12", f"--output_dir={tmp_path / 'cut'}", nproc=0)
    run_cli("dist_data.mine", *flags, f"--output_dir={tmp_path / 'whole'}", nproc=0)
    ours = read_triplets(tmp_path / "cut" / "mined.jsonl")
    ref = reference_mining(model, [(r["query"], r["document"]) for r in rows], use_faiss=False, cross_encoder=ce,
                           range_min=0, range_max=8, absolute_margin=None, num_negatives=2)
    assert_same_negatives(ours, ref, "mine_hard_negatives with a 12-token cross-encoder", min_agreement=0.95)
    assert ours != read_triplets(tmp_path / "whole" / "mined.jsonl")  # the length changed the scores
    assert json.load(open(tmp_path / "cut" / "args.json"))["cross_encoder_max_length"] == 12


@pytest.mark.parametrize("kind, nproc", [("router", 2), ("remote_code", 0)])
def test_filter_keeps_the_brute_force_set_of_the_models_own_vectors(kind, nproc, kinds_root, tmp_path):
    folder = build(kind, kinds_root)
    rows = wordnet_pairs(200, seed=9)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    trust = ["--trust_remote_code"] if kind == "remote_code" else []
    run_cli("dist_data.filter", f"--dataset={path}", f"--output_dir={tmp_path / 'out'}", f"--model_name={folder}",
            "--k=2", "--batch_size=16", "--batch_tokens=400", "--write_ids", "--noprogress", *trust, nproc=nproc)
    keep, margin = reference_keep(reference(folder, {"trust_remote_code": True} if trust else {}), rows, 2, roles=True)
    got = np.zeros(len(rows), dtype=bool)
    got[json.load(open(tmp_path / "out" / "ids_to_keep_0.json"))] = True
    decided = margin > 1e-5
    assert decided.mean() > 0.98 and (got[decided] == keep[decided]).all(), np.flatnonzero(got != keep)
    card = (tmp_path / "out" / "README.md").read_text()
    if trust:  # the card names the code that ran
        assert "--trust_remote_code" in card and "1 Python file(s) in the model folder, content hash" in card


def test_model_flags_that_cannot_apply_are_one_line(kinds_root):
    from dist_data.core.cli import UsageError, parse
    from dist_data.core.errors import InputError
    from dist_data.filter import FilterOptions

    plain, remote = build("plain", kinds_root), build("remote_code", kinds_root)
    cases = [(plain, {"config_kwargs": {"hidden_dropout_probb": 0.2}}, "--config_kwargs: hidden_dropout_probb is not"),
             (plain, {"tokenizer_kwargs": {"truncation_sid": "left"}}, "--tokenizer_kwargs: truncation_sid is not"),
             (plain, {"model_kwargs": {"no_such_arg": 1}}, "unexpected keyword argument 'no_such_arg'"),
             (remote, {}, "rerun with --trust_remote_code")]
    for folder, load, message in cases:
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            load_model(folder, CPU, load=load)
    # a setting transformers knows is taken (and is the model's then)
    model = load_model(plain, CPU, load={"tokenizer_kwargs": {"truncation_side": "left"}})
    assert model.tokenizer.truncation_side == "left"
    with pytest.raises(UsageError, match="--model_kwargs must be a JSON object"):
        parse(FilterOptions, ["--output_dir=x", "--model_kwargs={attn: sdpa}"])
    opts = parse(FilterOptions, ["--output_dir=x", "--trust_remote_code", "--truncate_dim=64",
                                 '--model_kwargs={"attn_implementation": "sdpa"}'])
    assert opts.load_kwargs() == {"trust_remote_code": True, "truncate_dim": 64,
                                  "model_kwargs": {"attn_implementation": "sdpa"}}
    assert parse(FilterOptions, ["--output_dir=x"]).load_kwargs() == {}  # the defaults: the cache keys of before
