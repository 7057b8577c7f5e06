"""Official mode: the numbers ``pycocoevalcap.eval.COCOEvalCap`` reports, minus SPICE.

Like ``COCOEvalCap.evaluate`` it tokenizes every caption with ``pycocoevalcap``'s ``PTBTokenizer`` (Stanford
CoreNLP 3.4.1 in a JVM, then punctuation removal) and scores the tokens with ``pycocoevalcap``'s ``Bleu(4)``,
``Meteor`` (``meteor-1.5.jar -l en -norm`` in a JVM), ``Rouge`` and ``Cider`` (CIDEr-D). The jars come inside
the ``pycocoevalcap`` wheel (see ``pycocoevalcap_files``); only a Java runtime is needed besides. SPICE is left
out because its jar needs Stanford models that ``pycocoevalcap`` downloads on first use.

Two JVMs start per call (tokenizer, METEOR), so score a whole split at once rather than batch by batch.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil

from .pycocoevalcap_files import (
    METEOR_JAR,
    METEOR_PARAPHRASE_TABLE,
    PTB_TOKENIZER_JAR,
    coco_scores,
    missing_files,
    pycocoevalcap_dir,
)

JAVA_HINT = "java not found: apt-get install default-jre-headless (or put any Java 8+ runtime on PATH)"

# The PTB tokenizer reads one caption per line; pycocoevalcap turns only '\n' into a space, and any other line
# break would shift every later caption onto the wrong image.
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def official_problems() -> list[str]:
    """What is missing on this machine for official mode (empty when it can run)."""
    problems = missing_files(PTB_TOKENIZER_JAR, METEOR_JAR, METEOR_PARAPHRASE_TABLE)
    if shutil.which("java") is None:
        problems.append(JAVA_HINT)
    root = pycocoevalcap_dir()
    if root is not None and (root / PTB_TOKENIZER_JAR).is_file() and not os.access(root / "tokenizer", os.W_OK):
        problems.append(
            f"{root / 'tokenizer'} is not writable: pycocoevalcap's PTBTokenizer writes its temporary file next to "
            "its jar; install pycocoevalcap where this user can write (e.g. in a virtual environment)"
        )
    return problems


def score_official(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) exactly as COCOEvalCap computes them (inputs already validated)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # One tokenizer run for predictions and references alike: it tokenizes line by line, so this equals
    # COCOEvalCap's two runs (one for each) and saves a JVM start.
    captions = {
        i: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in [prediction, *refs]]
        for i, (prediction, refs) in enumerate(zip(predictions, references))
    }
    tokenized = PTBTokenizer().tokenize(captions)
    res = {i: [tokens[0]] for i, tokens in tokenized.items()}
    gts = {i: tokens[1:] for i, tokens in tokenized.items()}
    return coco_scores(gts, res, _meteor(gts, res))


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    except Exception as error:
        # pycocoevalcap holds its lock when the JVM dies mid-way, and its __del__ would then wait forever.
        process = scorer.meteor_p
        process.kill()
        with contextlib.suppress(OSError):  # unsent input to a dead JVM; closed here so __del__ does not retry
            process.stdin.close()
        stderr = process.stderr.read().decode(errors="replace")[-2000:]
        if scorer.lock.locked():
            scorer.lock.release()
        raise RuntimeError(f"METEOR (meteor-1.5.jar) failed: {error}\n{stderr}") from error
    finally:
        del scorer  # its __del__ stops the JVM now rather than at some later garbage collection
    return score
