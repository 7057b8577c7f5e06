"""Fast mode: COCO caption metrics in pure Python, no Java.

- Tokenization: ``approximate_ptb_tokenize`` instead of the Stanford PTB tokenizer (equal output on all of
  coco_mini and on 34,999 of Flickr8k's 35,000 captions).
- BLEU-1..4, ROUGE-L and CIDEr-D: ``pycocoevalcap``'s own scorers, which are pure Python, so these equal the
  official numbers whenever the tokens do.
- METEOR: ``MeteorApproximation``, METEOR 1.5 without its paraphrase module (``meteor_approximation.LABEL``). Over
  a corpus it reads slightly lower than the official METEOR (0.0074 lower on coco_mini, 0.0097 on 7,000 Flickr8k
  images); a single caption can differ either way, since paraphrase matches also change which alignment wins.
"""

from __future__ import annotations

import functools
import importlib.metadata

from .approximate_ptb_tokenizer import approximate_ptb_tokenize
from .meteor_approximation import MeteorApproximation
from .pycocoevalcap_files import METEOR_JAR, coco_scores, missing_files, pycocoevalcap_dir

SNOWBALL_HINT = 'pip install "snowballstemmer>=2.2,<3"'


def fast_problems() -> list[str]:
    """What is missing for fast mode (empty when it can run)."""
    problems = missing_files(METEOR_JAR)  # METEOR's word lists and WordNet synonyms are read from the jar
    try:
        version = importlib.metadata.version("snowballstemmer")
    except importlib.metadata.PackageNotFoundError:
        problems.append(f"snowballstemmer not installed: {SNOWBALL_HINT}")
    else:
        major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if not (2, 2) <= major_minor < (3, 0):
            # Snowball 3 changed English stems (organization, university, ...); 2.2 stems as meteor-1.5.jar does.
            problems.append(f"snowballstemmer {version} stems English unlike METEOR 1.5: {SNOWBALL_HINT}")
    return problems


@functools.lru_cache(maxsize=1)
def _meteor() -> MeteorApproximation:
    return MeteorApproximation(pycocoevalcap_dir() / METEOR_JAR)


def score_fast(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """The fast-mode metrics (inputs already validated)."""
    hypotheses = [approximate_ptb_tokenize(p) for p in predictions]
    reference_tokens = [[approximate_ptb_tokenize(r) for r in refs] for refs in references]
    res = {i: [h] for i, h in enumerate(hypotheses)}
    gts = dict(enumerate(reference_tokens))
    meteor, _ = _meteor().corpus_score(hypotheses, reference_tokens)
    return coco_scores(gts, res, meteor)
