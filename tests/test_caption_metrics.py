"""Caption metrics: official mode equals pycocoevalcap's COCOEvalCap, fast mode is pure Python and close to it."""

import functools
import json
import os
import shutil
import subprocess
import sys

import pytest

from metrics.caption_metrics import METRIC_KEYS, CaptionMetricsUnavailable, preflight, score_captions
from metrics.caption_metrics import official_mode, pycocoevalcap_files
from metrics.caption_metrics.approximate_ptb_tokenizer import approximate_ptb_tokenize
from metrics.caption_metrics.meteor_approximation import MeteorApproximation
from tests.conftest import IN_CI, REPO

COCO_KEYS = {"BLEU-1": "Bleu_1", "BLEU-2": "Bleu_2", "BLEU-3": "Bleu_3", "BLEU-4": "Bleu_4",
             "METEOR": "METEOR", "ROUGE-L": "ROUGE_L", "CIDEr": "CIDEr"}
# Fast METEOR leaves out METEOR's paraphrase module; over coco_mini it reads 0.0074 below the official METEOR.
FAST_METEOR_TOLERANCE = 0.015


@pytest.fixture
def java():
    if shutil.which("java") is None:
        if IN_CI:
            pytest.fail("CI=true but java is missing: .ci/install_system_deps.sh installs default-jre-headless")
        pytest.skip("official mode needs Java: apt-get install default-jre-headless")


@pytest.fixture
def coco_mini(shared_data):
    """coco_mini's first caption of each image as the prediction, the other four as its references."""
    with open(shared_data / "coco_mini" / "annotations" / "captions_train2017.json") as f:
        annotations = json.load(f)["annotations"]
    by_image = {}
    for annotation in annotations:
        by_image.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return [c[0] for c in by_image.values()], [c[1:] for c in by_image.values()]


@functools.cache
def _official(predictions: tuple, references: tuple) -> dict:
    """Official scores, computed once per input (each call starts two JVMs)."""
    return score_captions(list(predictions), [list(r) for r in references], mode="official")


def _ptb_tokenize(captions: list[str]) -> list[str]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenized = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [tokenized[i][0] for i in range(len(captions))]


class _NoSpice:
    """Stands in for pycocoevalcap's SPICE, which would download Stanford models."""

    def method(self):
        return "SPICE"

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)


def test_official_mode_equals_cocoevalcap(coco_mini, java, monkeypatch):
    from pycocoevalcap.eval import COCOEvalCap
    from pycocotools.coco import COCO

    predictions, references = coco_mini
    images = [{"id": i} for i in range(len(predictions))]
    gts = COCO()
    gts.dataset = {
        "images": images,
        "annotations": [
            {"image_id": i, "id": i * 10 + j, "caption": ref}
            for i, refs in enumerate(references)
            for j, ref in enumerate(refs)
        ],
    }
    gts.createIndex()
    res = gts.loadRes([{"image_id": i, "caption": p} for i, p in enumerate(predictions)])
    monkeypatch.setattr("pycocoevalcap.eval.Spice", _NoSpice)
    coco_eval = COCOEvalCap(gts, res)
    coco_eval.evaluate()

    ours = _official(tuple(predictions), tuple(map(tuple, references)))
    assert ours["mode"] == "official"
    for key in METRIC_KEYS:
        assert ours[key] == pytest.approx(coco_eval.eval[COCO_KEYS[key]], abs=1e-6), key
    assert 0.1 < ours["BLEU-4"] < ours["BLEU-1"] < 1 and 0.1 < ours["METEOR"] < 0.5 and ours["CIDEr"] > 0.5


def test_fast_mode_is_close_to_official_on_coco_mini(coco_mini, java):
    predictions, references = coco_mini
    all_captions = predictions + [r for refs in references for r in refs]
    # Same tokens as the Stanford PTB tokenizer on every coco_mini caption, hence equal BLEU, ROUGE-L and CIDEr.
    assert [approximate_ptb_tokenize(c) for c in all_captions] == _ptb_tokenize(all_captions)

    fast = score_captions(predictions, references, mode="fast")
    official = _official(tuple(predictions), tuple(map(tuple, references)))
    assert fast["mode"] == "fast"
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert fast[key] == pytest.approx(official[key], abs=1e-9), key
    assert fast["METEOR"] == pytest.approx(official["METEOR"], abs=FAST_METEOR_TOLERANCE)


def test_fast_meteor_equals_the_jar_without_its_paraphrase_module(coco_mini, java):
    """With ``-m "exact stem synonym"``, meteor-1.5.jar must give exactly what the Python port gives."""
    predictions, references = coco_mini
    tokens = _ptb_tokenize(predictions + [r for refs in references for r in refs])
    hypotheses, rest = tokens[: len(predictions)], iter(tokens[len(predictions) :])
    reference_tokens = [[next(rest) for _ in refs] for refs in references]

    jar = pycocoevalcap_files.pycocoevalcap_dir() / pycocoevalcap_files.METEOR_JAR
    lines = [f"SCORE ||| {' ||| '.join(refs)} ||| {h}" for h, refs in zip(hypotheses, reference_tokens)]
    command = ["java", "-Xmx1G", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm", "-m", "exact stem synonym"]
    stats = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    evaluation = "EVAL ||| " + " ||| ".join(stats.stdout.splitlines()) + "\n"
    scores = subprocess.run(command, input=evaluation, capture_output=True, text=True, check=True)
    *jar_segments, jar_corpus = (float(x) for x in scores.stdout.split())

    corpus, segments = MeteorApproximation(jar).corpus_score(hypotheses, reference_tokens)
    assert corpus == pytest.approx(jar_corpus, abs=1e-12)
    assert segments == pytest.approx(jar_segments, abs=1e-12)


TRICKY_CAPTIONS = [
    "A man's dog doesn't like the cat's toy; it's 5:30 p.m. now!",
    "He can't, won't and cannot go -- they're gonna stay.",
    'A "quoted" word, \'single quoted\' words and dogs\' bowls.',
    "Two (2) people [with] {braces} here... one...two",
    "A t-shirt, black-and-white photo - and a 3-year-old.",
    "Cost is $5.50 or 50% off & more, 1,000 U.S. flags at St. Louis Inc. near Mr. Smith",
    "The \u201ccurly\u201d \u2018quotes\u2019 \u2014 em dash \u2026 ellipsis caf\u00e9",
    "Is it? Yes! Sure!? Ok?! a/b x+y=z 9/11 '90s o'clock",
    "A sign reading \"STOP.\" at the corner of Main St. and the U. of Miami",
    "",
]


def test_approximate_tokenizer_matches_ptb(shared_data, java):
    captions = list(TRICKY_CAPTIONS)
    flickr = shared_data / "flickr8k" / "captions.json"
    if flickr.is_file():
        with open(flickr) as f:
            captions += [c for image in json.load(f)["images"] for c in image["captions"]]
    ours = [approximate_ptb_tokenize(c) for c in captions]
    differing = [(c, o, p) for c, o, p in zip(captions, ours, _ptb_tokenize(captions)) if o != p]
    assert [d for d in differing if d[0] in TRICKY_CAPTIONS] == []
    # Real captions may differ in at most 1 of 10,000 (Flickr8k has one: "an ant 's-eye-view").
    assert len(differing) <= len(captions) // 10000, differing[:5]


@pytest.mark.parametrize("mode", ["fast", "official"])
def test_captions_equal_to_their_references_score_perfectly(mode, request):
    if mode == "official":
        request.getfixturevalue("java")
    predictions = ["a red bus parked on the street", "two cats sleeping on a sofa", "a man riding a wave"]
    scores = score_captions(predictions, [[p, p] for p in predictions], mode=mode)
    assert scores["mode"] == mode
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L"):
        assert scores[key] == pytest.approx(1.0, abs=1e-6), key
    assert scores["CIDEr"] == pytest.approx(10.0, abs=1e-6)  # CIDEr-D's 10 x cosine similarity, penalty-free


def test_hand_computed_scores_of_a_half_right_caption():
    scores = score_captions(["A cat."], [["a dog"]], mode="fast")
    assert scores["BLEU-1"] == pytest.approx(0.5, abs=1e-6)  # 1 of 2 words, equal lengths: no brevity penalty
    assert scores["BLEU-2"] == pytest.approx(0.0, abs=1e-4)
    assert scores["ROUGE-L"] == pytest.approx(0.5)  # LCS 1 of 2 words both ways
    # METEOR: only "a" matches, a function word (weight 1 - delta = 0.25 of 0.75 + 0.25 per side): P = R = 0.25;
    # one chunk over one match gives the penalty 0.6 * 1 ** 0.2, so 0.25 * (1 - 0.6) = 0.1.
    assert scores["METEOR"] == pytest.approx(0.1)


def test_an_empty_prediction_scores_zero():
    scores = score_captions(["", "a dog runs on the grass"], [["a cat sleeps"], ["a dog runs on the grass"]])
    alone = score_captions([""], [["a cat sleeps"]])
    for key in METRIC_KEYS:
        assert alone[key] == pytest.approx(0.0, abs=1e-6), key
    assert 0 < scores["METEOR"] < 1 and 0 < scores["ROUGE-L"] < 1


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        (["a dog", "a cat"], [["a dog"]], "2 predictions but 1 reference lists"),
        (["a dog"], [[]], r"references\[0\] is empty"),
        (["a dog"], [["a dog", "  "]], r"references\[0\]\[1\] is blank"),
        (["a dog"], ["a dog"], r"wrap a single reference as \[caption\]"),
        ("a dog", [["a dog"]], "predictions must be a list"),
        ([], [], "nothing to score"),
        ([None], [["a dog"]], r"predictions\[0\] is a NoneType"),
    ],
)
def test_bad_inputs_get_clear_errors(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        score_captions(predictions, references)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown caption metrics mode 'coco'"):
        score_captions(["a dog"], [["a dog"]], mode="coco")


def test_a_failing_meteor_jvm_raises_instead_of_hanging(java, monkeypatch):
    # pycocoevalcap's Meteor keeps its lock when the JVM dies, so its __del__ would block forever.
    monkeypatch.setattr("pycocoevalcap.meteor.meteor.METEOR_JAR", "no-such-meteor.jar")
    with pytest.raises(RuntimeError, match="Unable to access jarfile no-such-meteor.jar"):
        score_captions(["a dog runs"], [["a dog is running"]], mode="official")


def test_preflight_reports_a_missing_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without any java
    assert preflight("fast") == []
    problems = preflight("official")
    assert "java not found: apt-get install default-jre-headless (or put any Java 8+ runtime on PATH)" in problems
    with pytest.raises(CaptionMetricsUnavailable, match="java not found"):
        score_captions(["a dog"], [["a dog"]], mode="official")


def test_preflight_reports_a_missing_pycocoevalcap(monkeypatch):
    monkeypatch.setattr(pycocoevalcap_files, "pycocoevalcap_dir", lambda: None)
    monkeypatch.setattr(official_mode, "pycocoevalcap_dir", lambda: None)
    assert "pycocoevalcap not installed: pip install pycocoevalcap==1.2" in preflight("official")
    assert "pycocoevalcap not installed: pip install pycocoevalcap==1.2" in preflight("fast")


def test_evaluate_loads_the_module_by_path_offline(tmp_path):
    """In a fresh process whose cwd and sys.path do not include the repository, as a user would load it."""
    module, cache = str(REPO / "metrics" / "caption_metrics"), str(tmp_path / "cache")
    script = f"""
import json
import evaluate
metric = evaluate.load({module!r}, cache_dir={cache!r})
print("FAST", json.dumps(metric.compute(predictions=["a dog runs"], references=[["a dog runs", "a dog is running"]])))
official = evaluate.load({module!r}, "official", cache_dir={cache!r})
try:
    official.compute(predictions=["a dog runs"], references=[["a dog runs"]])
except RuntimeError as error:
    print("OFFICIAL", json.dumps(str(error)))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_MODULES_CACHE=str(tmp_path / "modules"), PATH=str(tmp_path))  # no java: official must say so
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("FAST ", "OFFICIAL ")))
    fast, official_error = json.loads(printed["FAST"]), json.loads(printed["OFFICIAL"])
    assert set(fast) == {*METRIC_KEYS, "mode"} and fast["mode"] == "fast"
    assert fast["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and fast["METEOR"] == pytest.approx(1.0)
    assert official_error.startswith("official-mode caption metrics cannot run here")
    assert "java not found" in official_error
