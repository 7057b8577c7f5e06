"""CIDEr-D of single captions against their image's references, with the training corpus's document frequencies:
the reward of self-critical sequence training (``self_critical.py``).

pycocoevalcap's ``CiderScorer`` computes CIDEr-D exactly like this, but it takes the document frequencies (the
"idf" of each n-gram) from the references it is handed in that call. Handed one batch of 32 images, it would weigh
n-grams by how rare they are in that batch. SCST needs the weights of the whole training corpus. It also needs them
for thousands of batches, so the reference vectors are built once here. pycocoevalcap has no option for either.
The n-gram counting is pycocoevalcap's own ``precook``; the weighting, the clipping and the length penalty follow its
``compute_cider`` (n = 1..4, sigma = 6, the mean over n-gram sizes and references, times 10).

Captions are sequences of token ids (words of the captioner's own vocabulary), so no text is decoded per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pycocoevalcap.cider.cider_scorer import precook

N_MAX = 4
SIGMA = 6.0

Vector = tuple[list[dict[tuple, float]], list[float], int]  # tf-idf per n-gram size, their norms, unigram count


class CiderDReward:
    """``reward(candidates, rows)``: the CIDEr-D of each candidate against the references of corpus row ``rows[i]``.

    ``references``: per image (row), its reference captions as token-id sequences (without start or end token).
    """

    def __init__(self, references: Sequence[Sequence[Sequence[int]]]):
        if not any(references):
            raise ValueError("CIDEr-D reward: the corpus has no reference captions")
        counts = [[precook(_words(ref), N_MAX) for ref in refs] for refs in references]
        self.document_frequency: dict[tuple, float] = {}
        for refs in counts:
            for ngram in {g for ref in refs for g in ref}:
                self.document_frequency[ngram] = self.document_frequency.get(ngram, 0.0) + 1.0
        self.log_corpus_size = math.log(float(len(references)))
        self.reference_vectors = [[self._vector(c) for c in refs] for refs in counts]

    def __len__(self) -> int:
        return len(self.reference_vectors)

    def reward(self, candidates: Sequence[Sequence[int]], rows: Sequence[int]) -> np.ndarray:
        """(len(candidates),) float64: CIDEr-D per candidate; 0 for a row without references."""
        if len(candidates) != len(rows):
            raise ValueError(f"{len(candidates)} candidates for {len(rows)} rows")
        out = np.zeros(len(candidates))
        for i, (candidate, row) in enumerate(zip(candidates, rows)):
            refs = self.reference_vectors[row]
            if refs:
                vec = self._vector(precook(_words(candidate), N_MAX))
                out[i] = 10.0 * float(np.mean([_similarity(vec, ref) for ref in refs]))
        return out

    def _vector(self, counts: dict[tuple, int]) -> Vector:
        vec: list[dict[tuple, float]] = [{} for _ in range(N_MAX)]
        norm = [0.0] * N_MAX
        length = 0
        for ngram, tf in counts.items():
            n = len(ngram) - 1
            # An n-gram no reference has counts as seen once (pycocoevalcap: max(1, df)).
            weight = float(tf) * (self.log_corpus_size - math.log(max(1.0, self.document_frequency.get(ngram, 0.0))))
            vec[n][ngram] = weight
            norm[n] += weight * weight
            if n == 1:  # pycocoevalcap counts the length in bigrams (len - 1); kept for equal numbers
                length += tf
        return vec, [math.sqrt(x) for x in norm], length


def _words(ids: Sequence[int]) -> str:
    return " ".join(str(int(i)) for i in ids)


def _similarity(hyp: Vector, ref: Vector) -> float:
    """Mean over n-gram sizes of the clipped cosine similarity, times the Gaussian length penalty."""
    (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
    penalty = math.exp(-float(len_h - len_r) ** 2 / (2 * SIGMA**2))
    total = 0.0
    for n in range(N_MAX):
        val = sum(min(w, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, w in vec_h[n].items())
        if norm_h[n] != 0 and norm_r[n] != 0:
            val /= norm_h[n] * norm_r[n]
        total += val * penalty
    return total / N_MAX
