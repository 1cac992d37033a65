"""Bag-of-words statistics of responses: sparse TF-IDF, cosine similarity, PCA, word frequencies.

Owns the text side of the report, in memory that grows with the non-zeros of the document x word
matrix (responses x distinct words per response), never with responses x vocabulary:

- `TermCounts` takes documents one at a time (each tokenised once, the text then dropped) into
  the arrays of a sparse count matrix (int32 indices and counts, 8 bytes per non-zero);
- `column_sums` / `top_from_sums` give word frequencies of any subset of documents from it;
- `TermCounts.tfidf(max_features)` turns it, in place, into an L2-normalised TF-IDF matrix
  (scipy CSR, float32): the counts are gone afterwards;
- `cosine_rows` and `pca_2d` work on that sparse matrix as they did on a dense one.

Words are lower-cased runs of letters, digits and underscores (`\\w+`), so code identifiers count
as words; the paper tokenizes with the student's tokenizer instead, which weighs sub-word pieces
but ranks similarity the same way. TF-IDF follows scikit-learn's TfidfVectorizer defaults: raw
counts times smoothed idf (`ln((1 + n) / (1 + df)) + 1`), each row L2-normalised, columns in
alphabetical order; with more distinct words than `max_features` the most frequent ones are kept
(ties alphabetical), as scikit-learn's `max_features` does. PCA is the SVD of the *centred*
matrix: dense for small matrices, else ARPACK (`scipy.sparse.linalg.svds`) on an operator that
centres implicitly, so the centred matrix is never built; both give the same components.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from typing import Any, Iterable

import numpy as np

_WORD = re.compile(r"\w+")

#: Words left out of the word-frequency figure only (function words say little about style).
STOP_WORDS = frozenset("""
a an the and or of to in on for is are was be it its this that with as by at from if then
else not no we i you he she they them their our your me my us so do does did can will would
should could has have had but than there here which what when where who how all any each
""".split())

#: Default cap on TF-IDF columns: far above the words that carry weight in any run, and a bound on
#: the dense per-column vectors (idf, PCA mean and components) whatever the corpus.
MAX_FEATURES = 2**18

#: Up to this many matrix cells (rows x columns) PCA runs densely (exact LAPACK SVD).
DENSE_PCA_CELLS = 4_000_000


#: Non-zeros handled at a time when a pass over the matrix needs temporaries (~50 bytes each: ~13 MB).
BLOCK_NONZEROS = 1 << 18


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def row_blocks(indptr: np.ndarray, nonzeros: int = BLOCK_NONZEROS) -> list[tuple[int, int]]:
    """(start, stop) row ranges of about `nonzeros` non-zeros each (at least one row each)."""
    blocks, start, n = [], 0, len(indptr) - 1
    while start < n:
        stop = int(np.searchsorted(indptr, indptr[start] + nonzeros, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        blocks.append((start, stop))
        start = stop
    return blocks


class TermCounts:
    """A sparse document x word count matrix built one document at a time.

    Columns are words in first-seen order (`vocabulary`); rows are documents in the order added.
    Memory: the vocabulary, plus 8 bytes per (document, distinct word) pair."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self._indices = array("i")
        self._counts = array("i")
        self._indptr = array("q", [0])
        self._consumed = False

    def add(self, text: str) -> None:
        if self._consumed:
            raise RuntimeError("these counts were turned into TF-IDF already")
        counter = Counter(words(text))
        index = self.index
        self._indices.extend([index.setdefault(word, len(index)) for word in counter])
        self._counts.extend(counter.values())
        self._indptr.append(len(self._indices))

    @property
    def n_docs(self) -> int:
        return len(self._indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self._indices)

    @property
    def vocabulary(self) -> list[str]:
        return list(self.index)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr int64, indices int32, counts int32): views of the matrix, no copies."""
        indptr = np.frombuffer(self._indptr, dtype=np.int64)
        indices = np.frombuffer(self._indices, dtype=np.int32) if self.nnz else np.zeros(0, np.int32)
        counts = np.frombuffer(self._counts, dtype=np.int32) if self.nnz else np.zeros(0, np.int32)
        return indptr, indices, counts

    def column_sums(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Total count of every word (float64, exact to 2**53) over the documents with `rows` True
        (a boolean mask over documents; all documents when None)."""
        if self._consumed:
            raise RuntimeError("these counts were turned into TF-IDF already")
        indptr, indices, counts = self.arrays()
        sums = np.zeros(len(self.index), dtype=np.float64)
        for start, stop in row_blocks(indptr):
            if rows is not None and not rows[start:stop].any():
                continue
            lo, hi = int(indptr[start]), int(indptr[stop])
            take = slice(lo, hi) if rows is None else np.repeat(rows[start:stop], np.diff(indptr[start:stop + 1]))
            idx, val = indices[lo:hi], counts[lo:hi]
            if rows is not None:
                idx, val = idx[take], val[take]
            sums += np.bincount(idx, weights=val, minlength=len(sums))
        return sums

    def tfidf(self, max_features: int | None = MAX_FEATURES) -> tuple[Any, list[str]]:
        """The L2-normalised TF-IDF matrix (scipy CSR, float32) and its vocabulary (alphabetical),
        written over the counts' own buffers: afterwards these counts are gone."""
        import scipy.sparse as sp

        indptr, indices, counts = self.arrays()
        n, vocabulary = self.n_docs, self.vocabulary
        df = np.zeros(len(vocabulary), dtype=np.int64)
        for lo in range(0, len(indices), BLOCK_NONZEROS):  # bincount copies its input to int64: a block at a time
            df += np.bincount(indices[lo:lo + BLOCK_NONZEROS], minlength=len(vocabulary))
        alphabetical = np.array(sorted(range(len(vocabulary)), key=vocabulary.__getitem__), dtype=np.int64)
        keep = alphabetical
        if max_features is not None and len(vocabulary) > max_features:
            rank = np.empty_like(alphabetical)
            rank[alphabetical] = np.arange(len(alphabetical))
            top = np.lexsort((rank, -self.column_sums()))[:max_features]  # most frequent, ties alphabetical
            keep = alphabetical[np.sort(rank[top])]
        remap = np.full(len(vocabulary), -1, dtype=np.int32)
        remap[keep] = np.arange(len(keep), dtype=np.int32)
        idf = (np.log((1 + n) / (1 + df[keep].astype(np.float64))) + 1.0).astype(np.float32)
        self._consumed = True
        values = counts.view(np.float32)  # the same buffer: counts are read before being overwritten
        new_indptr = np.zeros(n + 1, dtype=np.int64)
        write = 0
        for start, stop in row_blocks(indptr):
            lo, hi = int(indptr[start]), int(indptr[stop])
            columns = remap[indices[lo:hi]]
            kept = columns >= 0
            columns = columns[kept]
            weights = counts[lo:hi][kept].astype(np.float32) * idf[columns]
            running = np.concatenate([[0], np.cumsum(kept)])
            lengths = running[indptr[start + 1:stop + 1] - lo] - running[indptr[start:stop] - lo]
            rows = np.repeat(np.arange(stop - start), lengths)
            norms = np.sqrt(np.bincount(rows, weights=np.square(weights, dtype=np.float64), minlength=stop - start))
            weights /= np.where(norms == 0, 1.0, norms)[rows].astype(np.float32)
            indices[write:write + len(columns)] = columns  # write <= lo: never ahead of the reads
            values[write:write + len(columns)] = weights
            new_indptr[start + 1:stop + 1] = write + np.cumsum(lengths)
            write += len(columns)
        index_dtype = np.int32 if write < 2**31 else np.int64
        matrix = sp.csr_array((values[:write], indices[:write].astype(index_dtype, copy=False),
                               new_indptr.astype(index_dtype)), shape=(n, len(keep)), copy=False)
        matrix.sort_indices()
        return matrix, [vocabulary[j] for j in keep]


def tfidf(texts: Iterable[str], max_features: int | None = MAX_FEATURES) -> tuple[Any, list[str]]:
    """(documents x vocabulary) L2-normalised TF-IDF matrix (scipy CSR, float32) and the vocabulary."""
    counts = TermCounts()
    for text in texts:
        counts.add(text)
    return counts.tfidf(max_features)


def cosine_rows(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b` (rows already L2-normalised; an
    empty row has similarity 0). Sparse or dense."""
    if hasattr(a, "multiply"):
        return np.asarray(a.multiply(b).sum(axis=1), dtype=np.float64).ravel()
    return np.sum(a * b, axis=1)


def _top2_sparse(matrix: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(U * s for the top 2 components, s, total variance) of the implicitly centred matrix."""
    from scipy.sparse.linalg import LinearOperator, svds

    n, f = matrix.shape
    x = matrix.astype(np.float32, copy=False)
    mean = np.asarray(x.T @ np.ones(n, dtype=np.float32), dtype=np.float64) / n

    def matvec(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v).ravel()
        return (x @ v.astype(np.float32)).astype(np.float64) - float(mean @ v)

    def rmatvec(u: np.ndarray) -> np.ndarray:
        u = np.asarray(u).ravel()
        return (x.T @ u.astype(np.float32)).astype(np.float64) - mean * float(u.sum())

    operator = LinearOperator((n, f), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    start = np.random.default_rng(0).standard_normal(min(n, f))
    u, s, _ = svds(operator, k=2, v0=start, tol=1e-7, solver="arpack")
    order = np.argsort(-s)
    u, s = u[:, order], s[order]
    squares = sum(float(np.square(x.data[i:i + BLOCK_NONZEROS], dtype=np.float64).sum())
                  for i in range(0, x.nnz, BLOCK_NONZEROS))
    total = max(squares - n * float(mean @ mean), 0.0)
    return u * s, s, total


def pca_2d(matrix: Any, dense_cells: int = DENSE_PCA_CELLS) -> tuple[np.ndarray, list[float]]:
    """Rows projected on the first two principal components, and their explained variance ratios.
    `matrix` is dense or scipy sparse; sparse ones past `dense_cells` cells are never densified."""
    n, f = matrix.shape
    if n < 2 or f == 0:
        return np.zeros((n, 2)), [0.0, 0.0]
    if hasattr(matrix, "tocsr") and (n * f > dense_cells and min(n, f) > 3):
        points, s, total = _top2_sparse(matrix.tocsr())
        total = total or 1.0
        ratios = [float(v * v / total) for v in s]
    else:
        dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        centred = dense.astype(np.float64) - dense.mean(axis=0, keepdims=True, dtype=np.float64)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        components = min(2, len(s))
        points = u[:, :components] * s[:components]
        if components < 2:
            points = np.hstack([points, np.zeros((points.shape[0], 2 - components))])
        variance = s**2
        total = variance.sum() or 1.0
        ratios = [float(v / total) for v in variance[:2]] + [0.0] * (2 - components)
    # A fixed sign per component (the point farthest out on it is on the positive side), so reruns
    # draw the same picture. (Not the sign of the column sum: centred scores sum to zero.)
    for column in range(2):
        if n and points[np.argmax(np.abs(points[:, column])), column] < 0:
            points[:, column] *= -1
    return points, ratios


def top_from_sums(sums: np.ndarray, vocabulary: list[str], count: int) -> list[tuple[str, float]]:
    """The `count` most frequent words of a column-sum vector (stop words and numbers left out,
    ties in first-seen order), with their rate per 1,000 words of all words counted."""
    total = float(sums.sum())
    order = np.argsort(-sums, kind="stable")
    out: list[tuple[str, float]] = []
    for j in order:
        if len(out) == count or sums[j] <= 0:
            break
        word = vocabulary[j]
        if word not in STOP_WORDS and not word.isdigit():
            out.append((word, 1000.0 * float(sums[j]) / max(total, 1.0)))
    return out


def rates_from_sums(sums: np.ndarray, index: dict[str, int], chosen: list[str]) -> list[float]:
    """Rate per 1,000 words of each word of `chosen` in a column-sum vector."""
    total = max(float(sums.sum()), 1.0)
    return [1000.0 * float(sums[index[word]]) / total if word in index else 0.0 for word in chosen]


def top_words(texts: Iterable[str], count: int = 15) -> list[tuple[str, float]]:
    """The `count` most frequent words (stop words left out), with their rate per 1,000 words."""
    counts = TermCounts()
    for text in texts:
        counts.add(text)
    return top_from_sums(counts.column_sums(), counts.vocabulary, count)


def word_rates(texts: Iterable[str], vocabulary: list[str]) -> list[float]:
    """Rate per 1,000 words of each word of `vocabulary` in `texts`."""
    counts = TermCounts()
    for text in texts:
        counts.add(text)
    return rates_from_sums(counts.column_sums(), counts.index, vocabulary)
