"""Models: one Config + PreTrainedModel per file, registered with the Auto classes (captioning and segmentation
issues)."""
