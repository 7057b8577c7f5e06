"""COCO caption metrics as an ``evaluate`` module, loaded by path: ``evaluate.load("metrics/caption_metrics")``.

    >>> metric = evaluate.load("metrics/caption_metrics")                 # mode "fast" (pure Python)
    >>> metric = evaluate.load("metrics/caption_metrics", "official")     # COCOEvalCap numbers, needs Java
    >>> metric.compute(predictions=["a dog runs"], references=[["a dog is running", "a brown dog runs"]])
    {'BLEU-1': ..., 'BLEU-2': ..., 'BLEU-3': ..., 'BLEU-4': ..., 'METEOR': ..., 'ROUGE-L': ..., 'CIDEr': ...,
     'mode': 'fast'}

``compute(..., mode="official")`` overrides the configuration name for one call. The scoring code is in the
sibling modules (``scoring.score_captions``), shared with the plain-function API of this package.
"""

import datasets
import evaluate
from evaluate.utils.file_utils import add_start_docstrings

# evaluate copies into its module cache only the sibling files this script imports itself (not what those import),
# so every module the scoring code needs at run time is imported here, one per line and without trailing comments
# (evaluate would read a trailing comment as a download address). Do not remove the unused ones.
from .approximate_ptb_tokenizer import approximate_ptb_tokenize
from .fast_mode import score_fast
from .meteor_approximation import MeteorApproximation
from .official_mode import score_official
from .pycocoevalcap_files import pycocoevalcap_dir
from .scoring import METRIC_KEYS, MODE_DESCRIPTIONS, MODES, score_captions

_DESCRIPTION = f"""\
Corpus-level COCO caption metrics {", ".join(METRIC_KEYS)} (CIDEr is CIDEr-D, as in the COCO caption evaluation;
SPICE is not included). Modes, chosen by the configuration name or compute(mode=...):
- {MODE_DESCRIPTIONS["official"]}
- {MODE_DESCRIPTIONS["fast"]}
Every result carries the mode that produced it under "mode".
"""

_CITATION = """\
@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
          Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""

_INPUTS_DESCRIPTION = """\
Args:
    predictions (list of str): one generated caption per image.
    references (list of list of str): the reference captions of each image (at least one, none blank).
    mode (str, optional): "official" or "fast"; defaults to the configuration name, else "fast".
Returns:
    dict: "BLEU-1" ... "BLEU-4", "METEOR", "ROUGE-L", "CIDEr" as floats (fractions, the COCOEvalCap scale),
    and "mode" (str).
"""


@add_start_docstrings(_DESCRIPTION, _INPUTS_DESCRIPTION)
class CaptionMetrics(evaluate.Metric):
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated captions, official (Java) or fast (pure Python)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
            reference_urls=["https://arxiv.org/abs/1504.00325"],
        )

    def _compute(self, predictions, references, mode: str | None = None) -> dict[str, float | str]:
        if mode is None:
            mode = self.config_name if self.config_name in MODES else "fast"
        return score_captions(list(predictions), [list(refs) for refs in references], mode=mode)

