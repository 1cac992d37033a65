"""Bag-of-words statistics of responses: TF-IDF, cosine similarity, PCA, word frequencies.

Implemented with numpy (no scikit-learn needed). Words are lower-cased runs of letters, digits
and underscores (`\\w+`), so code identifiers count as words; the paper tokenizes with the
student's tokenizer instead, which weighs sub-word pieces but ranks similarity the same way.
TF-IDF follows scikit-learn's defaults: raw counts times smoothed idf
(`ln((1 + n) / (1 + df)) + 1`), each row L2-normalised. PCA is an SVD of the centred matrix.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

_WORD = re.compile(r"\w+")

#: Words left out of the word-frequency figure only (function words say little about style).
STOP_WORDS = frozenset("""
a an the and or of to in on for is are was be it its this that with as by at from if then
else not no we i you he she they them their our your me my us so do does did can will would
should could has have had but than there here which what when where who how all any each
""".split())


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def tfidf(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """(documents x vocabulary) L2-normalised TF-IDF matrix and the vocabulary."""
    counts = [Counter(words(text)) for text in texts]
    vocab = sorted(set().union(*counts)) if counts else []
    index = {word: column for column, word in enumerate(vocab)}
    matrix = np.zeros((len(texts), len(vocab)), dtype=np.float64)
    for row, counter in enumerate(counts):
        for word, count in counter.items():
            matrix[row, index[word]] = count
    df = (matrix > 0).sum(axis=0)
    idf = np.log((1 + len(texts)) / (1 + df)) + 1.0
    matrix *= idf
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms == 0, 1.0, norms)
    return matrix, vocab


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b` (rows already L2-normalised; an
    empty row has similarity 0)."""
    return np.sum(a * b, axis=1)


def pca_2d(matrix: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Rows projected on the first two principal components, and their explained variance ratios."""
    if matrix.shape[0] < 2 or matrix.shape[1] == 0:
        return np.zeros((matrix.shape[0], 2)), [0.0, 0.0]
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    components = min(2, len(s))
    points = u[:, :components] * s[:components]
    if components < 2:
        points = np.hstack([points, np.zeros((points.shape[0], 2 - components))])
    variance = s**2
    total = variance.sum() or 1.0
    ratios = [float(v / total) for v in variance[:2]] + [0.0] * (2 - components)
    # A fixed sign per component, so reruns on the same data draw the same picture.
    for column in range(2):
        if points[:, column].sum() < 0:
            points[:, column] *= -1
    return points, ratios


def top_words(texts: list[str], count: int = 15) -> list[tuple[str, float]]:
    """The `count` most frequent words (stop words left out), with their rate per 1,000 words."""
    counter: Counter[str] = Counter()
    total = 0
    for text in texts:
        tokens = words(text)
        total += len(tokens)
        counter.update(token for token in tokens if token not in STOP_WORDS and not token.isdigit())
    return [(word, 1000.0 * n / max(total, 1)) for word, n in counter.most_common(count)]


def word_rates(texts: list[str], vocabulary: list[str]) -> list[float]:
    """Rate per 1,000 words of each word of `vocabulary` in `texts`."""
    counter: Counter[str] = Counter()
    total = 0
    for text in texts:
        tokens = words(text)
        total += len(tokens)
        counter.update(tokens)
    return [1000.0 * counter[word] / max(total, 1) for word in vocabulary]
