"""Where ``pycocoevalcap`` 1.2 keeps the Java jars and data files the caption metrics use.

The PyPI wheel ships everything official mode needs, so nothing is downloaded at run time:
``tokenizer/stanford-corenlp-3.4.1.jar`` (PTB tokenizer), ``meteor/meteor-1.5.jar`` (METEOR, with its WordNet
synonyms, function words and Snowball stemmer inside) and ``meteor/data/paraphrase-en.gz`` (METEOR's paraphrase
table). SPICE is left out: its jar needs Stanford CoreNLP models that ``pycocoevalcap`` downloads on first use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PTB_TOKENIZER_JAR = Path("tokenizer") / "stanford-corenlp-3.4.1.jar"
METEOR_JAR = Path("meteor") / "meteor-1.5.jar"
METEOR_PARAPHRASE_TABLE = Path("meteor") / "data" / "paraphrase-en.gz"

INSTALL_HINT = "pip install pycocoevalcap==1.2"


def pycocoevalcap_dir() -> Path | None:
    """The installed ``pycocoevalcap`` package folder, or ``None`` when it is not installed."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_files(*relative_paths: Path) -> list[str]:
    """One message per file of ``relative_paths`` (inside ``pycocoevalcap``) that is not there."""
    root = pycocoevalcap_dir()
    if root is None:
        return [f"pycocoevalcap not installed: {INSTALL_HINT}"]
    return [
        f"{root / p} not found: reinstall pycocoevalcap ({INSTALL_HINT} --force-reinstall)"
        for p in relative_paths
        if not (root / p).is_file()
    ]


def coco_scores(gts: dict[int, list[str]], res: dict[int, list[str]], meteor: float) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of tokenized captions by pycocoevalcap's own (pure-Python) scorers, as
    ``COCOEvalCap`` computes them, with the METEOR score each mode computes its own way."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {
        "BLEU-1": float(bleu[0]),
        "BLEU-2": float(bleu[1]),
        "BLEU-3": float(bleu[2]),
        "BLEU-4": float(bleu[3]),
        "METEOR": float(meteor),
        "ROUGE-L": float(rouge),
        "CIDEr": float(cider),
    }
