"""``ImageCaptioningPipeline``: the task ``"image-captioning"``, one caption per image from a captioning
``VisionEncoderDecoderModel`` (``models.captioner``: CNN or ViT regions, LSTM/GRU or GPT-2 decoder).

>>> import pipelines  # registers the task
>>> from transformers import pipeline
>>> captioner = pipeline("image-captioning", model="runs/captioner", device="cpu")
>>> captioner("photo.jpg")
[{'generated_text': 'a red circle above a blue star.'}]
>>> captioner(["a.png", "b.png"], batch_size=8, num_beams=5, max_new_tokens=20)
[[{'generated_text': ...}], [{'generated_text': ...}]]
>>> captioner("photo.jpg", return_attention=True)[0]["attention_maps"].shape   # (words, rows, columns)

Transformers 5 dropped the stock ``image-to-text`` pipeline (the name now redirects to ``image-text-to-text``,
which needs a combined ``ProcessorMixin`` processor that these model folders do not have); this one keeps the old
output shape: ``[{"generated_text": ...}]`` per image.
"""

from __future__ import annotations


from models.caption_report import attention_maps

from .image_inputs import DEFAULT_MAX_IMAGE_PIXELS, load_image
from .image_pipeline import ImagePipeline


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def merge_generate_kwargs(num_beams: int | None, max_new_tokens: int | None, generate_kwargs: dict | None) -> dict:
    """``generate_kwargs`` with ``num_beams`` and ``max_new_tokens`` added (each checked; given twice is an error)."""
    generate = dict(generate_kwargs or {})
    for name, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens)):
        if value is None:
            continue
        if name in generate:
            raise ValueError(f"{name} is given twice, as a parameter and in generate_kwargs; give it once")
        generate[name] = _positive_int(name, value)
    return generate


class ImageCaptioningPipeline(ImagePipeline):
    """Caption images with a captioning encoder-decoder model, its tokenizer and its image processor.

    Inputs: a PIL image, a local file path or a numpy array, or a list of them (see ``pipelines.image_inputs``).
    RGBA, grayscale, palette and 16-bit images are converted to RGB; a missing, corrupt or non-image file raises a
    ``ValueError`` naming it.

    Parameters (at construction or per call):
        num_beams: beam width (default: the model's generation config).
        max_new_tokens: most tokens to generate after the start token (default: the generation config's
            ``max_length``).
        generate_kwargs: any other ``generate`` arguments, as a dict.
        return_attention: also return, per generated word, where the decoder looked (see Returns).
        max_image_pixels: refuse inputs larger than this many pixels (default 64 MP; 0: no limit).
        batch_size: images per ``generate`` call; a batch gives the captions of single calls.

    Returns, per image: ``[{"generated_text": str}]``. With ``return_attention=True`` the record also holds
    ``"words"`` (the caption's tokens as text) and ``"attention_maps"``, a float array (words, rows, columns) of
    the decoder's attention over the encoder's region grid while it predicted each word
    (``models.caption_report.attention_maps``: LSTM/GRU attention weights, or GPT-2 cross-attentions averaged over
    heads and layers).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_video_processor = False
    _load_tokenizer = True
    _pipeline_calls_generate = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None or self.image_processor is None:
            missing = " and ".join(
                name for name, part in (("tokenizer", self.tokenizer), ("image processor", self.image_processor))
                if part is None
            )
            raise ValueError(
                f"the image-captioning pipeline needs the model's {missing}: save them next to the model "
                "(models.captioner.save_captioner does) or pass tokenizer= / image_processor="
            )

    def _sanitize_parameters(
        self,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        return_attention: bool | None = None,
        max_image_pixels: int | None = None,
    ):
        preprocess, forward, postprocess = {}, {}, {}
        if max_image_pixels is not None:
            preprocess["max_image_pixels"] = max_image_pixels
        generate = merge_generate_kwargs(num_beams, max_new_tokens, generate_kwargs)
        if generate.get("max_new_tokens") is not None:
            self._check_decoder_length(generate["max_new_tokens"])
        if generate_kwargs is not None or generate:
            forward["generate_kwargs"] = generate
        if return_attention is not None:
            # The image travels to postprocess only when its attention is wanted.
            preprocess["keep_image"] = postprocess["return_attention"] = bool(return_attention)
        return preprocess, forward, postprocess

    def _check_decoder_length(self, max_new_tokens: int) -> None:
        # A GPT-2 decoder has a fixed number of positions; past them generate() fails with an index error.
        positions = getattr(getattr(self.model.config, "decoder", None), "max_position_embeddings", None)
        if positions is not None and max_new_tokens + 1 > positions:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} is more than this decoder can produce: it has "
                f"{positions} positions, the start token included; use max_new_tokens <= {positions - 1}"
            )

    def preprocess(self, image, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, keep_image: bool = False):
        rgb = load_image(image, max_image_pixels)
        inputs = {"pixel_values": self.image_processor(images=[rgb], return_tensors="pt")["pixel_values"].to(self.dtype)}
        if keep_image:
            # A one-item list: batching makes it a list of one-item lists, which the pipeline iterator splits back
            # into the same one-item list per image.
            inputs["image"] = [rgb]
        return inputs

    def _forward(self, model_inputs: dict, generate_kwargs: dict | None = None) -> dict:
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}), return_dict_in_generate=False)
        if generate_kwargs.get("max_new_tokens") is not None and "max_length" not in generate_kwargs:
            # max_new_tokens replaces the generation config's max_length; saying so keeps generate() from warning
            # that both are set.
            generate_kwargs["max_length"] = None
        sequences = self.model.generate(pixel_values=model_inputs["pixel_values"], **generate_kwargs)
        out = {"sequences": sequences}  # first key: its batch dimension is how the iterator splits the batch
        if "image" in model_inputs:
            out["image"] = model_inputs["image"]
        return out

    def postprocess(self, model_outputs: dict, return_attention: bool = False) -> list[dict]:
        ids = model_outputs["sequences"][0].tolist()
        record = {"generated_text": self.tokenizer.decode(ids, skip_special_tokens=True).strip()}
        if return_attention:
            # One extra decoder pass with the caption as input (teacher forcing), one image at a time, as the
            # caption report draws its attention figures.
            words, maps = attention_maps(self.model, self.tokenizer, self.image_processor, model_outputs["image"][0], ids)
            record["words"] = words
            record["attention_maps"] = maps
        return [record]


__all__ = ["ImageCaptioningPipeline", "merge_generate_kwargs"]
