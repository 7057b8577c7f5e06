"""Self-critical sequence training: the CIDEr-D reward, the baseline, the token mask and the caption task's
``--objective scst``."""

import logging
import random

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from models.cider_reward import CiderDReward
from models.self_critical import leave_one_out_advantage, sampled_token_mask, self_critical_loss
from tests.test_caption_task import data, make_task  # noqa: F401  (the tiny shapes fixture and task builder)


def _words(ids):
    return " ".join(map(str, ids))


def test_cider_reward_equals_pycocoevalcap_when_the_corpus_is_the_scored_set():
    rng = random.Random(0)
    refs = [[[rng.randrange(25) for _ in range(rng.randrange(3, 12))] for _ in range(rng.randrange(1, 6))]
            for _ in range(50)]
    candidates = [[rng.randrange(25) for _ in range(rng.randrange(0, 12))] for _ in range(50)]
    # pycocoevalcap takes its document frequencies from the references it scores: the same corpus here.
    mean, per_image = Cider().compute_score({i: [_words(r) for r in rs] for i, rs in enumerate(refs)},
                                            {i: [_words(c)] for i, c in enumerate(candidates)})
    ours = CiderDReward(refs).reward(candidates, list(range(50)))
    np.testing.assert_allclose(ours, per_image, rtol=0, atol=1e-12)
    assert ours.mean() == pytest.approx(mean)


def test_cider_reward_prefers_a_reference_and_uses_the_whole_corpus_frequencies():
    refs = [[[1, 2, 3, 4, 5], [1, 2, 3, 6]], [[7, 8, 9, 10], [7, 8, 11]], []]
    reward = CiderDReward(refs)
    scores = reward.reward([[1, 2, 3, 4, 5], [7, 8, 9, 10], [1, 2, 3, 4, 5], [1, 2]], [0, 0, 1, 2])
    assert scores[0] > scores[1] == 0.0 and scores[2] == 0.0  # another image's caption shares no n-gram
    assert scores[3] == 0.0  # a row without references rewards nothing
    # Scoring one row alone gives the same number: the frequencies are the corpus's, not the batch's.
    assert reward.reward([[1, 2, 3, 4, 5]], [0])[0] == scores[0]
    with pytest.raises(ValueError, match="2 candidates for 1 rows"):
        reward.reward([[1], [2]], [0])
    with pytest.raises(ValueError, match="no reference captions"):
        CiderDReward([[], []])


def test_token_mask_stops_after_the_first_end_token_and_baseline_leaves_the_sample_out():
    eos = 2
    tokens = torch.tensor([[5, 6, 2, 2, 2], [5, 2, 0, 0, 0], [5, 6, 7, 8, 9]])
    assert sampled_token_mask(tokens, eos).tolist() == [
        [True, True, True, False, False], [True, True, False, False, False], [True] * 5]
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])  # two images, three samples each
    np.testing.assert_allclose(leave_one_out_advantage(rewards, 3).numpy(),
                               [1 - 2.5, 2 - 2.0, 3 - 1.5, 0 - 3.0, 0 - 3.0, 6 - 0.0])


class WordShare:
    """A reward for the test: the share of a caption's words that are ``word_id``."""

    def __init__(self, word_id):
        self.word_id = word_id

    def reward(self, candidates, rows):
        return np.array([sum(t == self.word_id for t in c) / max(len(c), 1) for c in candidates])


def test_scst_raises_the_reward_it_optimises(data):  # noqa: F811
    task = make_task(data, "--freeze-encoder")
    model = task.build_model().train()
    batch = task.collate([task.train_dataset()[i] for i in range(4)])
    word = task.tokenizer.convert_tokens_to_ids("red")
    reward = WordShare(word)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    rewards = []
    for _ in range(30):
        loss, logs = self_critical_loss(model, task.model_inputs(batch), batch["row_index"].tolist(), reward,
                                        num_samples=4, max_length=task.max_length,
                                        eos_id=model.generation_config.eos_token_id)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        rewards.append(logs["scst_sample_cider"])
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.3, rewards


def test_cached_encoder_features_are_sampled_and_scored_unchanged(data):  # noqa: F811
    task = make_task(data, "--freeze-encoder")
    model = task.build_model().train()
    batch = task.collate([task.train_dataset()[i] for i in range(3)])
    with torch.no_grad():
        features = model.encoder(pixel_values=batch["pixel_values"]).last_hidden_state
    inputs = task.model_inputs({"encoder_hidden_states": features.clone()})
    loss, logs = self_critical_loss(model, inputs, [0, 1, 2], WordShare(5), num_samples=4,
                                    max_length=task.max_length, eos_id=model.generation_config.eos_token_id)
    loss.backward()
    assert torch.equal(inputs["encoder_outputs"].last_hidden_state, features)  # the caller's batch is untouched
    assert torch.isfinite(loss) and logs["scst_sample_length"] >= 1


def test_equal_rewards_give_no_gradient(data):  # noqa: F811
    task = make_task(data, "--freeze-encoder")
    model = task.build_model().train()
    batch = task.collate([task.train_dataset()[i] for i in range(2)])

    class Constant:
        def reward(self, candidates, rows):
            return np.ones(len(candidates))

    loss, _ = self_critical_loss(model, task.model_inputs(batch), [0, 1], Constant(), num_samples=3,
                                 max_length=task.max_length, eos_id=model.generation_config.eos_token_id)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    with pytest.raises(ValueError, match="at least 2 samples"):
        self_critical_loss(model, task.model_inputs(batch), [0, 1], Constant(), num_samples=1,
                           max_length=task.max_length, eos_id=model.generation_config.eos_token_id)


def test_caption_task_objective_scst_scores_samples_against_the_training_captions(data, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING, logger="models.caption_task"):
        task = make_task(data, "--objective", "scst", "--scst-samples", "3")
    assert "--objective scst without --init-from" in caplog.text
    model = task.build_model().train()
    ds = task.train_dataset()
    assert len(task.reward) == len(data["train"])
    # The reward's references are the training captions as token ids, without the start and end tokens.
    caption = data["train"]["captions"][0][0]
    ids = task.tokenizer(caption, add_special_tokens=False)["input_ids"]
    assert task.reward.reward([ids], [0])[0] > task.reward.reward([ids], [1])[0]
    batch = task.collate([ds[i] for i in range(3)])
    assert batch["row_index"].tolist() == [0, 1, 2]
    loss, logs = task.training_step(model, batch)
    loss.backward()
    assert set(logs) == {"scst_sample_cider", "scst_sample_length"} and logs["scst_sample_length"] >= 1
    assert any(p.grad is not None and p.grad.any() for p in model.decoder.parameters())
    off = make_task(data, "--objective", "scst", "--scst-dropout", "off")
    off_model = off.build_model().train()
    off.train_dataset()
    seen = []
    for module in off_model.decoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda m, i, o: seen.append(m.training))
    off.training_step(off_model, off.collate([off._train_ds[i] for i in range(2)]))
    assert seen and not any(seen)  # sampled and scored without dropout
    assert off_model.training  # and handed back in training mode
    with pytest.raises(ValueError, match="--caption-sampling random"):
        make_task(data, "--objective", "scst", "--caption-sampling", "all")
    with pytest.raises(ValueError, match="--scst-samples must be at least 2"):
        make_task(data, "--objective", "scst", "--scst-samples", "1")
