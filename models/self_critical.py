"""Self-critical sequence training (SCST) of a captioner: optimise CIDEr-D itself instead of the next word.

Rennie et al., "Self-critical Sequence Training for Image Captioning" (CVPR 2017), with the baseline of Luo, "A
Better Variant of Self-Critical Sequence Training" (2020): for every image draw K captions from the model, score
each with CIDEr-D against the image's references (``cider_reward.py``), and use the mean score of the *other* K-1
samples as its baseline. The loss is REINFORCE,

    loss = - sum_i sum_t (r_i - b_i) * log p(w_i,t | w_i,<t, image) / (number of sampled tokens)

so captions that score above their siblings become more likely and the rest less. Sampling is multinomial over the
whole vocabulary (``generate(do_sample=True, top_k=0)``), without gradients; the log-probabilities then come from
one teacher-forced pass over the samples. Both passes run in training mode (dropout on), or both with dropout off
(``dropout=False``, the policy that generation at test time uses). With an encoder that trains (no cached
features) every image is encoded K times, once per sample. ``transformers`` has no such trainer, and TRL's GRPO, whose
group baseline is the same idea, trains causal language models from prompts, not a ``VisionEncoderDecoderModel``
on cached image features; hence this module.

Start it from a model trained with cross-entropy (``scripts/train.py --task caption --objective scst --init-from
FOLDER``): from random weights the samples score near zero and there is nothing to reinforce.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from transformers.modeling_outputs import BaseModelOutput

from .cider_reward import CiderDReward


def repeat_encoder_inputs(inputs: dict[str, Any], k: int) -> dict[str, Any]:
    """``model_inputs`` with every image repeated ``k`` times in a row (the order of ``num_return_sequences``)."""
    if "encoder_outputs" in inputs:
        states = inputs["encoder_outputs"].last_hidden_state.repeat_interleave(k, dim=0)
        return {"encoder_outputs": BaseModelOutput(last_hidden_state=states)}
    return {"pixel_values": inputs["pixel_values"].repeat_interleave(k, dim=0)}


def _copied(inputs: dict[str, Any]) -> dict[str, Any]:
    if "encoder_outputs" in inputs:
        return {"encoder_outputs": BaseModelOutput(last_hidden_state=inputs["encoder_outputs"].last_hidden_state)}
    return dict(inputs)


def sampled_token_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(N, T) bool: the generated tokens up to and including the first ``eos_id`` of each row (the padding after
    it, which may use the same id, is left out)."""
    is_eos = tokens == eos_id
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()
    return eos_before == 0


def leave_one_out_advantage(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """(B * K,) reward minus the mean reward of the other K - 1 samples of the same image."""
    per_image = rewards.view(-1, k)
    baseline = (per_image.sum(dim=1, keepdim=True) - per_image) / (k - 1)
    return (per_image - baseline).reshape(-1)


def self_critical_loss(
    model: torch.nn.Module, encoder_inputs: dict[str, Any], rows: list[int], reward: CiderDReward, *,
    num_samples: int, max_length: int, eos_id: int, dropout: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SCST loss of one batch and its logs (mean sample CIDEr-D, mean sampled length).

    ``model``: a ``VisionEncoderDecoderModel`` (or its DDP wrapper), in training mode. ``encoder_inputs``: its
    ``pixel_values`` (B, 3, H, W) or ``encoder_outputs`` (B, N, C). ``rows``: the B images' rows in ``reward``'s
    corpus. ``max_length``: the longest sample, the start token included. ``dropout=False``: sample and score
    the samples with dropout off (the policy that generation at test time uses), not in training mode.
    """
    if num_samples < 2:
        raise ValueError("self-critical training needs at least 2 samples per image (the baseline is their mean)")
    inner = getattr(model, "module", model)  # DDP wraps the model; generate() lives on the model itself
    was_training = model.training
    repeated = repeat_encoder_inputs(encoder_inputs, num_samples)
    try:
        if not dropout:
            model.eval()
        with torch.no_grad():
            # Each repeated row samples on its own, as num_return_sequences would. generate() may rewrite the
            # encoder_outputs it is given (it expands them in place for num_return_sequences): it gets a copy.
            sampled = inner.generate(**_copied(repeated), do_sample=True, num_beams=1, top_k=0, top_p=1.0,
                                     temperature=1.0, max_length=max_length)
        inputs, targets = sampled[:, :-1], sampled[:, 1:]
        mask = sampled_token_mask(targets, eos_id)
        candidates = [row[m].tolist() for row, m in zip(targets, mask)]
        candidates = [c[:-1] if c and c[-1] == eos_id else c for c in candidates]  # references have no <eos>
        sample_rows = [r for r in rows for _ in range(num_samples)]
        rewards = torch.as_tensor(reward.reward(candidates, sample_rows), dtype=torch.float32)
        advantage = leave_one_out_advantage(rewards, num_samples).to(sampled.device)
        out = model(**repeated, decoder_input_ids=inputs, decoder_attention_mask=mask.long(), use_cache=False)
    finally:
        model.train(was_training)
    log_probs = -F.cross_entropy(out.logits.float().transpose(1, 2), targets, reduction="none")  # (B*K, T)
    mask_f = mask.float()
    loss = -(advantage[:, None] * log_probs * mask_f).sum() / mask_f.sum().clamp(min=1.0)
    logs = {"scst_sample_cider": float(rewards.mean()), "scst_sample_length": float(mask_f.sum(dim=1).mean())}
    return loss, logs
