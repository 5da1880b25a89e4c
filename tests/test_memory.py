"""Tests for the memory retrievers (rememr1.memory)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from rememr1.errors import InputError
from rememr1.memory import RETRIEVERS, make_retriever

LEXICAL = ["tfidf", "bm25", "overlap"]

# A small vocabulary so that memories and queries overlap often; "a" and "I" are dropped
# by sklearn's tokeniser (single characters), the capitalised/punctuated forms check that
# tokenisation matches sklearn's exactly.
VOCAB = ["alpha", "beta", "gamma", "delta", "Alpha", "beta,", "river", "stone", "a", "I",
         "x2", "zeta-eta", "omega!"]

words = st.lists(st.sampled_from(VOCAB), min_size=0, max_size=25).map(" ".join)
histories = st.lists(words, min_size=1, max_size=40)
queries = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=6).map(" ".join)

TOL = 1e-9


def sklearn_scores(candidates: list[str], query: str) -> np.ndarray | None:
    """What the official code does: refit the default vectorizer on the candidates."""
    vec = TfidfVectorizer()
    try:
        docs = vec.fit_transform(candidates)
    except ValueError:  # empty vocabulary: nothing can be recalled
        return None
    return cosine_similarity(vec.transform([query]), docs)[0]


def check_against_sklearn(hits, candidates: list[str], query: str) -> None:
    ref = sklearn_scores(candidates, query)
    if ref is None or ref.max() <= 0:
        assert hits == []
        return
    # The top hit has the best score; among (numerically) tied best, the latest memory.
    best = ref.max()
    tied = [i for i, s in enumerate(ref) if s >= best - TOL]
    assert hits[0].step == max(tied)
    assert hits[0].score == pytest.approx(best, abs=TOL)
    # Every hit's score is sklearn's, and exactly the candidates with a nonzero score are hits.
    for h in hits:
        assert h.score == pytest.approx(ref[h.step], abs=TOL)
        assert h.text == candidates[h.step]
    assert sorted(h.step for h in hits) == [i for i, s in enumerate(ref) if s > 0]
    # Best first.
    assert all(a.score >= b.score - TOL for a, b in zip(hits, hits[1:], strict=False))


@settings(max_examples=60, deadline=None)
@given(history=histories, query=queries)
def test_tfidf_incremental_matches_sklearn_refit(history, query):
    r = make_retriever("tfidf")
    for i, text in enumerate(history):
        r.add(text)
        # Queried after every add: the incremental counts/df must match a full refit.
        check_against_sklearn(r.search(query, k=i + 1), history[: i + 1], query)


@settings(max_examples=60, deadline=None)
@given(history=histories, query=queries, data=st.data())
def test_tfidf_limit_matches_sklearn_on_prefix(history, query, data):
    limit = data.draw(st.integers(min_value=0, max_value=len(history) + 2))
    r = make_retriever("tfidf")
    for text in history:
        r.add(text)
    hits = r.search(query, k=len(history), limit=limit)
    assert all(h.step < limit for h in hits)
    if limit == 0:
        assert hits == []
    else:
        check_against_sklearn(hits, history[:limit], query)
    # Asking again gives the same answer (nothing cached wrongly by the prefix path).
    assert r.search(query, k=len(history), limit=limit) == hits


def test_tfidf_idf_is_over_the_candidates_only():
    # Over all three memories "river" is in 2 of 3 docs; over the first two, in 1 of 2.
    history = ["river stone", "stone stone", "river"]
    r = make_retriever("tfidf")
    for t in history:
        r.add(t)
    got = {h.step: h.score for h in r.search("river stone", k=3, limit=2)}
    # Hand computation: n=2, df(river)=1, df(stone)=2 -> idf = ln(3/2)+1, ln(3/3)+1 = 1.
    idf_r, idf_s = np.log(1.5) + 1, 1.0
    q = np.array([idf_r, idf_s]) / np.hypot(idf_r, idf_s)
    doc0 = q  # "river stone" has the same weights as the query
    doc1 = np.array([0.0, 1.0])
    assert got[0] == pytest.approx(float(q @ doc0))
    assert got[1] == pytest.approx(float(q @ doc1))
    assert set(got) == {0, 1}


@pytest.mark.parametrize("name", LEXICAL)
def test_limit_excludes_the_current_memory(name):
    r = make_retriever(name)
    r.add("the treaty was signed in Lisbon by the envoy")
    r.add("weather notes about rain and fog")
    r.add("who signed the treaty in Lisbon")  # the memory just written at this step
    hits = r.search("who signed the treaty in Lisbon", k=3, limit=2)
    assert [h.step for h in hits] == [0]
    assert r.search("who signed the treaty in Lisbon", k=1)[0].step == 2  # without limit


@pytest.mark.parametrize("name", LEXICAL)
def test_ties_go_to_the_later_memory(name):
    r = make_retriever(name)
    for t in ["red apple", "blue sky", "red apple", "green grass"]:
        r.add(t)
    hits = r.search("red apple", k=3)
    assert [h.step for h in hits] == [2, 0]
    assert hits[0].score == hits[1].score


@pytest.mark.parametrize("name", LEXICAL)
def test_k_larger_than_candidates_and_order(name):
    r = make_retriever(name)
    for t in ["cats and dogs", "only dogs here", "nothing relevant", "cats cats dogs dogs"]:
        r.add(t)
    hits = r.search("cats dogs", k=50)
    assert sorted(h.step for h in hits) == [0, 1, 3]  # the non-matching memory is left out
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert len(r.search("cats dogs", k=2)) == 2
    assert r.search("cats dogs", k=2) == hits[:2]


@pytest.mark.parametrize("name", LEXICAL)
@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_returns_nothing(name, query):
    r = make_retriever(name)
    r.add("some memory")
    assert r.search(query) == []


@pytest.mark.parametrize("name", LEXICAL)
def test_no_shared_words_and_tokenless_texts(name):
    r = make_retriever(name)
    assert r.search("anything") == []  # empty history
    r.add("a")  # no token of two or more characters
    r.add("I")
    if name == "overlap":  # plain word split keeps one-letter words
        assert [h.step for h in r.search("a I", k=2)] == [1, 0]
    else:  # sklearn/bm25s tokenisers drop them: nothing to match
        assert r.search("a I") == []
    assert r.search("unrelated words") == []
    r.add("unrelated thing")
    assert [h.step for h in r.search("unrelated words")] == [2]


def test_overlap_hand_computed_scores():
    r = make_retriever("overlap")
    r.add("The hat.")  # words: the, hat
    r.add("Cat!")  # words: cat
    r.add("dog")
    r.add("THE CAT wore the HAT")
    # Query words (with repetition): the, cat, the, hat -> 4 words.
    hits = r.search("The cat, the HAT!", k=10)
    assert [(h.step, h.score) for h in hits] == [(3, 1.0), (0, 0.75), (1, 0.25)]


def test_overlap_punctuation_is_deleted_not_split():
    r = make_retriever("overlap")
    r.add("state of the art")
    r.add("stateoftheart results")
    hits = r.search("state-of-the-art")
    assert [(h.step, h.score) for h in hits] == [(1, 1.0)]


def test_bm25_finds_the_memory_with_the_rare_term():
    r = make_retriever("bm25")
    common = "the report about the company and the market and the company"
    for i in range(8):
        r.add(f"{common} report {i}")
    r.add("the company moved to Zanzibar")  # step 8, the only one with the rare word
    r.add(f"{common} market market")
    hits = r.search("company market Zanzibar", k=3)
    assert hits[0].step == 8
    assert len(hits) == 3


def test_bm25_reindexes_only_when_candidates_change(monkeypatch):
    import bm25s

    calls = []
    original = bm25s.BM25.index

    def counting_index(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", counting_index)
    r = make_retriever("bm25")
    r.add("first memory about rivers")
    r.add("second memory about stones")
    r.search("rivers")
    r.search("stones", k=2)
    assert len(calls) == 1
    r.add("third memory about rivers and stones")
    assert r.search("rivers stones", k=1)[0].step == 2
    assert len(calls) == 2


def test_bm25_stopwords_off_by_default():
    r = make_retriever("bm25")
    r.add("this is the one")
    r.add("completely different text")
    assert [h.step for h in r.search("is this the")] == [0]
    r2 = make_retriever("bm25", stopwords="english")
    r2.add("this is the one")
    r2.add("completely different text")
    assert r2.search("is this the") == []  # only stopwords left in the query


def test_unknown_retriever_and_bad_options():
    with pytest.raises(InputError, match="unknown retriever 'nope'"):
        make_retriever("nope")
    with pytest.raises(InputError, match="bm25"):
        make_retriever("bm25", bogus=1)
    assert set(LEXICAL) | {"dense"} <= set(RETRIEVERS)
    assert make_retriever().name == "tfidf"


@pytest.mark.parametrize("name", LEXICAL)
def test_bad_k_and_limit(name):
    r = make_retriever(name)
    r.add("some memory")
    with pytest.raises(InputError):
        r.search("memory", k=0)
    with pytest.raises(InputError):
        r.search("memory", limit=-1)
    assert r.search("memory", limit=0) == []
    assert [h.step for h in r.search("memory", limit=99)] == [0]


@pytest.mark.parametrize("name", LEXICAL)
def test_sync_extends_or_rebuilds(name):
    history = ["gold coin in the well", "silver key under the mat", "gold key in the box"]
    r = make_retriever(name)
    r.sync(history[:2])
    assert r.texts == history[:2]
    r.sync(history)  # extension: only the new memory is added
    assert r.texts == history
    fresh = make_retriever(name)
    for t in history:
        fresh.add(t)
    assert r.search("gold key", k=3) == fresh.search("gold key", k=3)
    # A history that is not an extension (a new episode) replaces the index.
    other = ["copper wire", "gold key"]
    r.sync(other)
    assert r.texts == other
    assert [h.step for h in r.search("gold key", k=3)] == [1]
    # A shorter history also replaces it.
    r.sync(["gold"])
    assert r.texts == ["gold"] and len(r) == 1
    assert [h.step for h in r.search("gold key", k=3)] == [0]


def test_reset_clears_everything():
    for name in LEXICAL:
        r = make_retriever(name)
        r.add("alpha beta")
        r.reset()
        assert len(r) == 0 and r.search("alpha") == []
        r.add("gamma")
        assert r.search("alpha") == []
        assert [h.step for h in r.search("gamma")] == [0]


@pytest.mark.parametrize("name", LEXICAL)
def test_copies_are_independent_and_picklable(name):
    import copy
    import pickle

    r = make_retriever(name)
    r.add("north tower")
    r.search("tower")
    clone = copy.deepcopy(r)
    clone.add("south tower tower")
    assert len(r) == 1 and [h.step for h in r.search("tower", k=5)] == [0]
    assert sorted(h.step for h in clone.search("tower", k=5)) == [0, 1]
    restored = pickle.loads(pickle.dumps(r))
    assert restored.search("north") == r.search("north")


def test_dense_missing_extra_gives_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "sentence_transformers"
                        else real(name, *a, **k))
    with pytest.raises(InputError, match=r"pip install 'rememr1\[dense\]'"):
        make_retriever("dense")


def test_dense_bad_model_path_is_an_input_error(tmp_path):
    r = make_retriever("dense", model_path=str(tmp_path / "no-such-model"))
    r.add("text")
    with pytest.raises(InputError, match="cannot load the dense retriever model"):
        r.search("query")


@pytest.mark.slow
def test_dense_ranks_a_paraphrase_above_unrelated_text():
    r = make_retriever("dense")
    r.add("The recipe needs two cups of flour and a pinch of salt.")
    r.add("The film's director was born in a small coastal town in Portugal.")
    r.add("Quarterly revenue grew because of strong sales in Asia.")
    r.add("unrelated filler about the weather being cloudy")
    hits = r.search("Where does the movie's filmmaker come from?", k=4)
    assert hits[0].step == 1
    assert len(hits) == 4  # dense always returns the top-k
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    # Embeddings are cached: only the new memory is encoded on the next search.
    encoded = []
    original = r._encode
    r._encode = lambda texts: (encoded.append(list(texts)), original(texts))[1]
    r.add("A chef explains how much flour goes into the bread.")
    hits = r.search("how much flour is in the recipe", k=2, limit=5)
    assert encoded[0] == ["A chef explains how much flour goes into the bread."]
    assert {h.step for h in hits} == {0, 4}
    assert r.search("director birthplace", limit=1)[0].step == 0  # limit honoured
