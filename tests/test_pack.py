"""Packing logic (:mod:`dist_data.text.pack`) against the obvious reference, on real WordNet text
tokenized by the shipped MiniLM's tokenizer; boundary cases; any cut of the stream into slices."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dist_data.text.pack import Layout, PackStats, pack_slice, reference_pack
from dist_data.pretokenize import load_tokenizer, special_layout
from dist_data.text.wordnet import iter_synsets


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(None, None)


@pytest.fixture(scope="module")
def wordnet_docs(tok):
    """~300 documents of real text, from one line to long multi-synset runs."""
    synsets = list(iter_synsets(pos="n"))[:3000]
    texts, i, n = [], 0, 1
    while i < len(synsets) and len(texts) < 300:
        texts.append("\n".join(f"{', '.join(s.lemmas)}: {s.definition}." for s in synsets[i : i + n]))
        i, n = i + n, (n * 7) % 23 + 1
    return tok(texts, add_special_tokens=False)["input_ids"]


def pack_in_slices(docs, layout, drop_last, cuts, block=50):
    """Pack the stream cut into slices at ``cuts`` (as ranks would), each fed in blocks."""
    stream = layout.document_stream(docs)
    bounds = [0, *sorted(cuts), len(stream)]
    C = layout.content_len
    heads = [stream[a : min(b, a + C)] for a, b in zip(bounds, bounds[1:])]
    stats, rows = PackStats(), []
    for r, (a, b) in enumerate(zip(bounds, bounds[1:])):
        later = [h for h in heads[r + 1 :] if len(h)]
        continuation = np.concatenate(later)[:C] if later else np.zeros(0, np.int32)
        blocks = [stream[s : min(s + block, b)] for s in range(a, b, block)]
        for packed in pack_slice(blocks, a, continuation, layout, drop_last, stats, batch=7):
            for ids, mask in zip(packed.input_ids, packed.attention_mask):
                assert (mask[: mask.sum()] == 1).all() and (ids[mask == 0] == layout.pad_id).all()
                rows.append(ids[mask == 1].tolist())
    return rows, stats


@pytest.mark.parametrize("specials", ["document", "sequence", "none"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_packing_matches_reference_and_decodes_to_the_original_stream(tok, wordnet_docs, specials, drop_last):
    layout = special_layout(tok, 64, specials)
    rows, stats = pack_in_slices(wordnet_docs, layout, drop_last, cuts=[1000, 1001, 5000])
    assert rows == reference_pack(wordnet_docs, layout, drop_last)
    assert all(len(r) == 64 for r in rows[:-1])
    tokens_in = sum(len(d) for d in wordnet_docs)
    doc_specials = len(wordnet_docs) * 2 if specials == "document" else 0
    assert stats.tokens_out + stats.dropped_tokens == tokens_in + doc_specials + stats.sequence_specials
    # The content, specials removed, is every document's tokens in order: nothing lost or repeated.
    content = [t for r in rows for t in r if t not in (tok.cls_token_id, tok.sep_token_id)]
    expected = [t for d in wordnet_docs for t in d]
    assert content == (expected if not drop_last else expected[: len(content)])
    if specials == "document":  # and it decodes back to the documents' text
        text = tok.decode([t for r in rows for t in r])
        assert text.startswith(tok.decode([tok.cls_token_id] + wordnet_docs[0] + [tok.sep_token_id]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=0, max_size=30), st.integers(3, 20), st.sampled_from(["document", "sequence", "none"]),
       st.booleans(), st.lists(st.integers(0, 600), max_size=4), st.integers(1, 30))
def test_any_cut_into_slices_gives_the_reference(doc_lengths, seq_len, specials, drop_last, cuts, block):
    docs = [list(range(100 + i, 100 + i + n)) for i, n in enumerate(doc_lengths)]
    layout = Layout(seq_len, specials, (1,), (2,), 0)
    total = len(layout.document_stream(docs))
    rows, _ = pack_in_slices(docs, layout, drop_last, [c % (total + 1) for c in cuts], block)
    assert rows == reference_pack(docs, layout, drop_last)


def test_boundary_cases():
    layout = Layout(8, "document", (1,), (2,), 0)
    # an empty document still gets its specials; a document of exactly seq_len fills one sequence
    assert reference_pack([[]], layout, False) == [[1, 2]]
    exact = list(range(10, 16))  # 6 tokens + 2 specials = 8
    assert pack_in_slices([exact], layout, False, [])[0] == [[1, *exact, 2]]
    # 3 * seq_len + 1 tokens: three full sequences and one token left, padded or dropped
    long = list(range(10, 10 + 3 * 8 + 1 - 2))
    rows, stats = pack_in_slices([long], layout, False, [5, 17])
    assert [len(r) for r in rows] == [8, 8, 8, 1] and stats.padding == 7
    rows, stats = pack_in_slices([long], layout, True, [5, 17])
    assert [len(r) for r in rows] == [8, 8, 8] and stats.dropped_tokens == 1
    # seq_len that leaves no room next to the special tokens is refused
    for specials in ("document", "sequence"):
        with pytest.raises(ValueError, match="no room"):
            Layout(2, specials, (1,), (2,), 0)
    assert Layout(1, "none", (1,), (2,), 0).content_len == 1
