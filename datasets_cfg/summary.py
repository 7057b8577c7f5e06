"""A short, printable summary of a built DatasetDict: rows per split, caption statistics, class pixel shares."""

from __future__ import annotations

import numpy as np
import datasets


def summarize(ds: datasets.DatasetDict, max_mask_rows: int = 200) -> str:
    lines = []
    for split, d in ds.items():
        parts = [f"{split}: {d.num_rows} images"]
        if "captions" in d.column_names and d.num_rows:
            caps = d["captions"]
            n_caps = [len(c) for c in caps]
            words = [len(c.split()) for cs in caps for c in cs]
            parts.append(f"{sum(n_caps)} captions ({np.mean(n_caps):.1f}/image, {np.mean(words):.1f} words each)")
        lines.append(", ".join(parts))
        if "mask" in d.column_names and d.num_rows:
            names = d.features["mask_classes"].feature.names
            counts = np.zeros(len(names) + 1, np.int64)  # last bin: ignore / unlabelled
            rows = d.select(range(min(max_mask_rows, d.num_rows)))
            for m in rows["mask"]:
                ids = np.asarray(m).ravel()
                counts += np.bincount(np.minimum(ids, len(names)), minlength=len(names) + 1)
            share = counts / max(counts.sum(), 1)
            top = ", ".join(f"{names[i]} {share[i]:.1%}" for i in np.argsort(-share[:-1]) if share[i] > 0)
            lines.append(f"  pixel shares over {rows.num_rows} masks: {top}; ignored {share[-1]:.1%}")
    return "\n".join(lines)
