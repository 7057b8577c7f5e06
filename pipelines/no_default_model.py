"""The ``default`` entry of a pipeline task that has no default model.

``transformers.pipeline(task)`` without ``model=`` reads the task's registered ``default``; a task registered
without one fails there with a bare ``KeyError: 'default'``. This project ships no pretrained captioner or
segmenter and never downloads one, so the entry says instead what to pass and how to train a model.
"""

from __future__ import annotations


class NoDefaultModel(dict):
    """Looked up by ``pipeline(task)`` without ``model=``; raises a ``ValueError`` that says how to get a model."""

    def __init__(self, task: str, train_task: str):
        super().__init__(model=None)
        self.task, self.train_task = task, train_task

    def __getitem__(self, key):
        if key != "model":
            return super().__getitem__(key)
        raise ValueError(
            f"pipeline({self.task!r}) needs model=: a model folder saved by this project's training, e.g. "
            f"`python scripts/train.py --task {self.train_task} --dataset shapes --output-dir runs/{self.train_task}` "
            f"and then model='runs/{self.train_task}/best'. This project has no default {self.task} model and "
            "downloads none."
        )


__all__ = ["NoDefaultModel"]
