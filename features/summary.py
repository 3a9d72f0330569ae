"""What `cli.py inspect` prints about a token store (`TokenStore.summary`): counts, failures, damage, sizes, layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from features.store import DONE, FAILED, STATUS_NAMES, TokenStore

__all__ = ["store_summary", "summary_text"]

# Failed, partial and damaged clips the summary lists one by one (the rest are counted).
_FIRST_FAILURES = 5


def store_summary(store: TokenStore, disk_usage: bool = False) -> dict:
    """A JSON-able summary for people and scripts (`cli.py inspect`).

    Sizes come from the metadata (`token_bytes`: the done clips' tokens as stored uncompressed); `disk_usage`
    also walks every file of the store for `bytes_on_disk` (None without it), which at 175k clips in one
    file per clip took most of a minute.
    """
    counts = store.counts()
    status = store.status
    splits = {}
    for split in sorted(set(store.splits.tolist())):
        mask = store.splits == split
        splits[split or "(none)"] = {name: int(((status == code) & mask).sum())
                                     for code, name in STATUS_NAMES.items()}
    done = np.flatnonzero(status == DONE)
    failed = np.flatnonzero(status == FAILED)
    reasons = store.failure_reasons
    by_reason: dict[str, int] = {}
    for i in failed:
        kind = _reason_kind(str(reasons[i]))
        by_reason[kind] = by_reason.get(kind, 0) + 1
    decoded_s = store.decoded_s
    partial = np.flatnonzero((status == DONE) & ~np.isnan(decoded_s))
    damaged = store.damaged_clips(done)
    return {
        "store": str(store.path),
        "clips": store.num_clips,
        **counts,
        "partial": int(partial.size),
        "first_partial": [{"clip_id": str(store.clip_ids[i]), "path": str(store.paths[i]),
                           "decoded_s": round(float(decoded_s[i]), 3)} for i in partial[:_FIRST_FAILURES]],
        "damaged": len(damaged),
        "first_damaged": [{"clip_id": str(store.clip_ids[i]), "path": str(store.paths[i]), "problem": problem}
                          for i, problem in list(damaged.items())[:_FIRST_FAILURES]],
        "no_audio": int((~store.read(done, ["has_audio"])["has_audio"]).sum()) if done.size else 0,
        "failed_by_reason": dict(sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))),
        "first_failures": [{"clip_id": str(store.clip_ids[i]), "path": str(store.paths[i]),
                            "reason": str(reasons[i])} for i in failed[:_FIRST_FAILURES]],
        "classes": len(set(store.labels.tolist()) - {""}),
        "splits": splits,
        "layout": (f"shards: one file per token array and block of {store.clips_per_shard} clips"
                   if store.clips_per_shard else "one file per clip and token array (made before shards)"),
        "token_bytes": int(done.size) * sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                                            for name, (dtype, shape) in store.field_shapes().items()
                                            if name not in store.scalar_fields),
        "bytes_on_disk": _folder_bytes(store.path) if disk_usage else None,
        "token_layout": store.token_layout.to_dict(),
        "extract_config": store.extract_config,
        "store_config": store.store_config.to_dict(),
        "provenance": store.provenance,
    }


def summary_text(summary: dict) -> str:
    """`store_summary` as `cli.py inspect` prints it: counts, sizes, layout, splits, failures and damage."""
    layout = summary["token_layout"]
    disk = summary.get("bytes_on_disk")
    lines = [f"{summary['store']}: {summary['clips']} clips: {summary['done']} done, {summary['failed']} failed, "
             f"{summary['pending']} pending; {summary['classes']} classes; "
             f"{summary['token_bytes'] / max(summary['done'], 1) / 2**10:.0f} KiB of tokens per done clip"
             + (f", {disk / 2**30:.2f} GiB on disk" if disk is not None else ""),
             f"video tokens (V, Nv, Dv) = ({layout['V']}, {layout['Nv']}, {layout['Dv']}), audio tokens "
             f"(Na, Da) = ({layout['Na']}, {layout['Da']}); profile {summary['extract_config'].get('profile')}; "
             f"layout: {summary['layout']}"]
    lines += [f"  split {split}: " + ", ".join(f"{n} {name}" for name, n in counts.items())
              for split, counts in summary["splits"].items()]
    failed = ", ".join(f"{n} {kind}" for kind, n in summary["failed_by_reason"].items()) or "none"
    lines.append(f"{summary['partial']} partial, {summary['no_audio']} without audio; failed: {failed}; "
                 f"{summary['damaged']} damaged")
    lines += [f"  failed {row['clip_id']}: {row['reason']}" for row in summary["first_failures"]]
    lines += [f"  damaged {row['clip_id']}: {row['problem']}" for row in summary["first_damaged"]]
    return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    """A failure reason without its particulars (numbers, the decoder's words in parentheses): what `inspect`
    counts by, e.g. "video decoding failed after N frames, corrupt or truncated"."""
    return re.sub(r"\d+(\.\d+)?", "N", re.sub(r"\s*\(.*\)\s*$", "", reason)).strip() or "(no reason recorded)"


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
