"""Beam search with and without the decoder cache: same captions, and how much faster the cache makes it.

Target (issue 3): beam search with the cache returns the same sequences as without it and is at least 3x faster
for 20-token captions.

With the cache, each step feeds one new token: the LSTM decoder carries its recurrent state (h, c) and beam search
reorders it; the transformer decoder keeps its self-attention keys/values and the cross-attention keys/values
of the image regions. Without it (``use_cache=False``), ``generate`` re-runs the decoder over the whole prefix at
every step, so a 20-token caption costs 1 + 2 + ... + 20 decoder positions instead of 20.

The captioners have Flickr8k sizes (``benchmarks/captioning_flickr8k.py``): EfficientNet-Lite0 regions at 224 px
(7 x 7 x 320), a 2,540-word vocabulary, a 512-d LSTM with 512-d attention, or a 3-layer 512-d transformer
decoder. Weights are random (speed and equality do not depend on training) and every caption is forced to exactly
20 new tokens (``min_new_tokens = max_new_tokens = 20``), so both paths do the same number of steps. Timed:
``generate`` from precomputed encoder outputs (the decoding the cache changes), median of ``--repeats`` calls; the
encoder pass (median of 3) is timed on its own and added for the end-to-end ratio.

    python benchmarks/beam_search_cache.py [--threads 2] [--out benchmarks/results/beam_search_cache.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutput

from training_run import REPO, machine, write_results

sys.path.insert(0, str(REPO))

from models.caption_tokenizer import train_caption_tokenizer  # noqa: E402
from models.captioner import build_captioner  # noqa: E402

DECODERS = {
    "lstm": {"embed_dim": 512, "decoder_dim": 512, "attention_dim": 512},
    "transformer": {"n_embd": 512, "n_layer": 3, "n_head": 8},
}
NEW_TOKENS = 20


def median_seconds(fn, repeats: int) -> tuple[float, torch.Tensor]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", default="1,8", help="images per generate call")
    p.add_argument("--beams", default="3,5")
    p.add_argument("--vocab", type=int, default=2540)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/beam_search_cache.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = train_caption_tokenizer([" ".join(f"w{i}" for i in range(args.vocab))])
    rows = []
    for decoder, options in DECODERS.items():
        model, _ = build_captioner(tokenizer, encoder="tf_efficientnet_lite0", decoder=decoder, image_size=224,
                                   encoder_options={"feature_stage": 4}, decoder_options=options)
        model.eval()
        for batch in map(int, args.batch_sizes.split(",")):
            pixels = torch.randn(batch, 3, 224, 224)
            with torch.no_grad():
                encoder_s, features = median_seconds(lambda: model.encoder(pixel_values=pixels).last_hidden_state, 3)
            for beams in map(int, args.beams.split(",")):
                def generate(use_cache: bool) -> torch.Tensor:
                    with torch.no_grad():
                        return model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=features),
                                              num_beams=beams, num_return_sequences=1, use_cache=use_cache,
                                              min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS, early_stopping=True)
                cached_s, cached = median_seconds(lambda: generate(True), args.repeats)
                plain_s, plain = median_seconds(lambda: generate(False), args.repeats)
                same = cached.shape == plain.shape and bool(torch.equal(cached, plain))
                rows.append({
                    "decoder": decoder, "batch": batch, "beams": beams, "new_tokens": cached.shape[1] - 1,
                    "same_sequences": same, "cached_s": round(cached_s, 4), "uncached_s": round(plain_s, 4),
                    "speedup": round(plain_s / cached_s, 2), "encoder_s": round(encoder_s, 4),
                    "speedup_with_encoder": round((plain_s + encoder_s) / (cached_s + encoder_s), 2),
                })
                print(rows[-1], flush=True)

    print(f"\nBeam search, {NEW_TOKENS} new tokens per caption, {args.threads} threads, median of {args.repeats}\n")
    print("| decoder | images | beams | same sequences | with cache (s) | without (s) | speed-up | incl. encoder |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['decoder']} | {r['batch']} | {r['beams']} | {'yes' if r['same_sequences'] else 'NO'} | "
              f"{r['cached_s']:.3f} | {r['uncached_s']:.3f} | {r['speedup']:.1f}x | {r['speedup_with_encoder']:.1f}x |")
    write_results(Path(args.out), {"benchmark": "beam_search_cache", "machine": machine(), "threads": args.threads,
                                   "new_tokens": NEW_TOKENS, "target_speedup": 3.0, "rows": rows})


if __name__ == "__main__":
    main()
