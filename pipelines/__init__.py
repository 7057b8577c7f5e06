"""Custom transformers pipelines, registered with ``transformers.pipelines.PIPELINE_REGISTRY`` on import.

>>> import pipelines
>>> from transformers import pipeline
>>> pipeline("image-captioning", model="runs/captioner")("photo.jpg")
[{'generated_text': 'a red circle.'}]
>>> pipeline("semantic-segmentation", model="runs/unet")("photo.jpg")
[{'label': 'background', 'score': 0.98, 'area': 0.8, 'mask': <PIL.Image mode=L>}, ...]

Tasks (neither name is a stock task of transformers 5, whose ``image-to-text`` was removed and whose
``image-segmentation`` keeps its own name):

- ``"image-captioning"``: ``ImageCaptioningPipeline``, models loaded with ``AutoModelForImageTextToText``
  (``models.captioner.CaptionerModel`` folders and stock ``VisionEncoderDecoderModel`` ones);
- ``"semantic-segmentation"``: ``SemanticSegmentationPipeline``, models loaded with
  ``AutoModelForSemanticSegmentation`` (``models.unet.UnetForSemanticSegmentation``); neither has a default
  model: without ``model=`` they say how to train one;
- ``"image-captioning-seg"``: ``CaptionSegPipeline``, a caption and a segmentation from one segmentation-aware
  captioner (``models.caption_seg_model.CaptionSegModel``, loaded with ``AutoModel``); without ``model=`` it loads
  the model ``make demo`` trained.

Importing this package also imports the model modules, which register their configs, models and image processor
with the Auto classes, so the folders load in this process with or without ``trust_remote_code=True``.
"""

from transformers import AutoModel, AutoModelForImageTextToText, AutoModelForSemanticSegmentation
from transformers.pipelines import PIPELINE_REGISTRY

# Imported for their Auto-class registrations.
import models.caption_seg_model  # noqa: F401
import models.captioner  # noqa: F401
import models.segmentation_image_processor  # noqa: F401
import models.unet  # noqa: F401

from .caption_pipeline import ImageCaptioningPipeline
from .caption_seg_pipeline import CaptionSegPipeline, DemoModelDefault
from .no_default_model import NoDefaultModel
from .segmentation_pipeline import SemanticSegmentationPipeline

CAPTIONING_TASK = "image-captioning"
SEGMENTATION_TASK = "semantic-segmentation"
CAPTION_SEG_TASK = "image-captioning-seg"


def _register(task: str, pipeline_class: type, pt_model: type, kind: str, default: dict | None = None) -> None:
    existing = PIPELINE_REGISTRY.supported_tasks.get(task)
    # Stock tasks name their class lazily as "transformers.pipelines.<module>.<Class>"; registered ones hold it.
    impl = None if existing is None else existing["impl"]
    impl_path = impl if isinstance(impl, str) else f"{getattr(impl, '__module__', '')}.{getattr(impl, '__name__', '')}"
    if impl is not None and impl_path.startswith("transformers."):
        # A future transformers release could add a stock task of the same name; never replace it silently.
        raise RuntimeError(
            f"transformers now has a stock pipeline task {task!r} ({impl_path}); rename this project's task in "
            "pipelines/__init__.py"
        )
    if impl is pipeline_class:
        return  # imported again (e.g. importlib.reload of a submodule): already registered
    PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=pt_model, type=kind,
                                        default=default)


# "multimodal" is how transformers 4 typed its image-to-text task; transformers 5 stores the type but reads it nowhere.
_register(CAPTIONING_TASK, ImageCaptioningPipeline, AutoModelForImageTextToText, "multimodal",
          default=NoDefaultModel(CAPTIONING_TASK, "caption"))
_register(SEGMENTATION_TASK, SemanticSegmentationPipeline, AutoModelForSemanticSegmentation, "image",
          default=NoDefaultModel(SEGMENTATION_TASK, "segment"))
_register(CAPTION_SEG_TASK, CaptionSegPipeline, AutoModel, "multimodal", default=DemoModelDefault())

__all__ = [
    "CAPTIONING_TASK",
    "CAPTION_SEG_TASK",
    "SEGMENTATION_TASK",
    "CaptionSegPipeline",
    "ImageCaptioningPipeline",
    "SemanticSegmentationPipeline",
]
