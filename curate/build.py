"""`curate build`: the evaluation set from the annotators' decisions (the paper's section 3, step 4).

The kept videos become a manifest in the extraction format (split "unseen", with each class's group and SR; the span
the annotators chose, when they gave one, as the clip's start_s,end_s), beside the class table with video counts, the
videos dropped and why, the videos without an audio track per class (dropped with `require_audio`), and the
statistics of the paper's Table 2 (classes and videos per group) and Fig. 3 (videos per class by SR).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import atomic_write, write_csv, write_json, write_text
from common.media import Segment
from common.settings import config_dict
from curate import classlists
from curate.classlists import normalised_name
from curate.config import BuildConfig
from curate.relatedness import DIFFICULTY_GROUPS, relatedness_group, separate_captions
from curate.tables import (
    LABELS,
    ClassRow,
    parse_span,
    read_class_table,
    read_decisions,
    read_index,
    resolve_path,
)
from features.manifest import ManifestRow, parse_descriptive_columns, write_manifest
from text.class_names import read_class_file

__all__ = ["SPLIT", "BuildSummary", "build_evaluation_set", "videos_per_class_figure"]

logger = logging.getLogger(__name__)

SPLIT = "unseen"  # the split of every clip of the evaluation set
# Lists whose labels the video backbone (Kinetics-400 MViT) or its successors' checkpoints were trained on.
_BACKBONE_LISTS = ("kinetics400", "kinetics600", "kinetics700")
_SR_BOUNDS = {"easy": "(0.1, 0.33]", "medium": "(0.33, 0.66]", "hard": "(0.66, 0.8]"}


@dataclass(frozen=True)
class BuildSummary:
    """The evaluation set `build_evaluation_set` wrote."""

    n_classes: int
    n_videos: int
    groups: dict[str, dict[str, int]]  # group -> {"classes": n, "videos": n}
    dropped: dict[str, int]  # reason (without details) -> videos
    dropped_classes: tuple[str, ...]  # classes of the table left without enough videos
    without_audio: dict[str, tuple[int, int]]  # class -> (kept videos without an audio track, kept videos)
    manifest_path: Path
    classes_path: Path
    dropped_path: Path
    statistics_md: Path
    figure_png: Path


def _audio_markdown(classes: dict[str, ClassRow], without_audio: dict[str, tuple[int, int]],
                    require_audio: bool) -> list[str]:
    """The table of videos without an audio track, per class, of the videos the annotators kept."""
    total = sum(n for n, _ in without_audio.values())
    videos = sum(k for _, k in without_audio.values())
    fate = "dropped (`require_audio`)" if require_audio else "kept (pass --require-audio to drop them)"
    lines = ["", f"Videos without an audio track, of those the annotators kept: {total} of {videos} "
             f"({total / max(videos, 1):.0%}), {fate}:", "",
             "| class | group | kept by the annotators | without audio | share |", "|---|---|---:|---:|---:|"]
    for name, (n, k) in sorted(without_audio.items(), key=lambda item: (-item[1][0] / max(item[1][1], 1), item[0])):
        lines.append(f"| {name} | {classes[name].group} | {k} | {n} | {n / max(k, 1):.0%} |")
    return lines


def _statistics_markdown(classes: list[ClassRow], videos: dict[str, list[ManifestRow]],
                         dropped: Counter, dropped_classes: list[str], title: str, audio: list[str]) -> str:
    lines = [f"# {title}", "", "Classes and videos per group (the paper's Table 2):", "",
             "| group | SR | classes | videos | videos per class (min / mean / max) | hours | with audio |",
             "|---|---|---:|---:|---|---:|---:|"]

    def row(name: str, bounds: str, members: list[ClassRow]) -> str:
        counts = [len(videos[c.class_name]) for c in members]
        clips = [v for c in members for v in videos[c.class_name]]
        hours = sum(v.duration_s or 0.0 for v in clips) / 3600
        audio = sum(bool(v.has_audio) for v in clips)
        spread = f"{min(counts)} / {np.mean(counts):.1f} / {max(counts)}" if counts else "-"
        share = f"{audio / len(clips):.0%}" if clips else "-"
        return f"| {name} | {bounds} | {len(members)} | {len(clips)} | {spread} | {hours:.2f} | {share} |"

    for group in DIFFICULTY_GROUPS:
        lines.append(row(group, _SR_BOUNDS[group], [c for c in classes if c.group == group]))
    lines.append(row("**all**", "(0.1, 0.8]", classes))
    lines += ["", "Videos per class, by SR (the paper's Fig. 3: videos_per_class.png):", "",
              "| class | group | SR | videos | nearest seen class |", "|---|---|---:|---:|---|"]
    for c in sorted(classes, key=lambda c: (c.sr, c.class_name)):
        nearest = f"{c.nearest_seen_class} ({c.nearest_seen_dataset})" if c.nearest_seen_class else ""
        lines.append(f"| {c.class_name} | {c.group} | {c.sr:.3f} | {len(videos[c.class_name])} | {nearest} |")
    lines += audio
    lines += ["", f"Dropped videos: {sum(dropped.values())} (dropped.csv lists each with its reason)", ""]
    lines += [f"- {reason}: {count}" for reason, count in sorted(dropped.items())]
    if dropped_classes:
        lines += ["", f"Classes dropped for want of videos: {', '.join(dropped_classes)}"]
    return "\n".join(lines) + "\n"


def videos_per_class_figure(classes: list[ClassRow], videos: dict[str, list], title: str):
    """Bars of videos per class, classes in order of SR, coloured by SR, group boundaries marked (Fig. 3)."""
    import textwrap

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg renders the PNG
    from matplotlib.ticker import MaxNLocator

    ordered = sorted(classes, key=lambda c: (c.sr, c.class_name))
    width_in = max(6.0, 0.28 * len(ordered) + 2.0)
    figure = Figure(figsize=(width_in, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    norm, cmap = Normalize(0.1, 0.8), colormaps["viridis"]
    x = np.arange(len(ordered))
    axes.bar(x, [len(videos[c.class_name]) for c in ordered], color=[cmap(norm(c.sr)) for c in ordered])
    for k in range(1, len(ordered)):
        if ordered[k].group != ordered[k - 1].group:
            axes.axvline(k - 0.5, color="black", linestyle="--", linewidth=0.8)
    for group in DIFFICULTY_GROUPS:
        members = [k for k, c in enumerate(ordered) if c.group == group]
        if members:
            axes.annotate(group, ((members[0] + members[-1]) / 2, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    axes.set_xticks(x, [c.class_name for c in ordered], rotation=90, fontsize=7)
    axes.set_xlim(-0.6, len(ordered) - 0.4)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("videos")
    axes.set_title("\n".join(textwrap.wrap(title, int(width_in * 11))), fontsize=9)  # 9 pt: ~11 characters an inch
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="SR (min cosine distance to a seen class)")
    figure.draw_without_rendering()  # the layout, so that the captions' extents are final
    separate_captions(figure, axes, list(axes.texts))
    return figure


def _seen_lists(classes_path: Path) -> dict[str, list[str]]:
    """The lists the class table must not repeat: the video backbone's (`_BACKBONE_LISTS`) and the seen lists that
    `curate select` scored the table against (recorded in relatedness.json beside it, when it is there)."""
    lists = {name: classlists.load_classlist(name) for name in _BACKBONE_LISTS}
    record_path = classes_path.parent / "relatedness.json"
    if not record_path.is_file():
        return lists
    for name in json.loads(record_path.read_text(encoding="utf-8"))["config"]["seen"]:
        try:
            lists.setdefault(name, classlists.load_classlist(classlists.canonical_classlist(name)))
        except ValueError:  # a class file of the researcher's own training classes
            try:
                lists.setdefault(name, read_class_file(name))
            except FileNotFoundError:
                logger.warning("%s names the seen list %s, which is not there: the class table is not checked "
                               "against it", record_path, name)
    return lists


def _check_class_table(path: Path, classes: list[ClassRow], edges: tuple[float, ...]) -> None:
    """A hand-edited class table must still be a table `curate select` could have written.

    Raises:
        InputError: a group that its SR does not give under `edges`, or a class that is a seen class under another
            spelling (`normalised_name`): a label of a list the video backbone was trained on (`_BACKBONE_LISTS`)
            or of a seen list `curate select` scored the table against.
    """
    wrong = [f"{row.class_name!r} (SR {row.sr:g} is {relatedness_group(row.sr, edges)}, not {row.group})"
             for row in classes if relatedness_group(row.sr, edges) != row.group]
    if wrong:
        raise InputError(f"{path}: {len(wrong)} class(es) whose group contradicts their SR under edges "
                         f"{','.join(f'{e:g}' for e in edges)}: {'; '.join(wrong[:5])}; fix the group or the sr")
    # normalised label -> (the first list that has it, its spelling there)
    labels: dict[str, tuple[str, str]] = {}
    for name, names in _seen_lists(path).items():
        for label in names:
            labels.setdefault(normalised_name(label), (name, label))
    seen = [f"{row.class_name!r} ({'{}: {!r}'.format(*labels[normalised_name(row.class_name)])})" for row in classes
            if normalised_name(row.class_name) in labels]
    if seen:
        raise InputError(f"{path}: {len(seen)} class(es) are seen classes (the video backbone's labels or the seen "
                         f"lists), not unseen: {'; '.join(seen[:5])}; drop them from the class table")


def _clip_span(video: dict[str, str], decision: dict[str, str], where: str) -> tuple[Segment | None, float | None]:
    """(segment, duration_s) of a kept video in its file: the candidate's own segment, narrowed to the span the
    annotators chose (seconds from the clip's start, as the filmstrip counts them) when they gave one.

    Raises:
        ValueError: the chosen span starts after the end of the clip (the message is the drop reason).
    """
    segment = parse_span(video.get("start_s", ""), video.get("end_s", ""), where)
    chosen = parse_span(decision.get("start_s", ""), decision.get("end_s", ""), where)
    duration_s = float(video["duration_s"]) if video.get("duration_s") else None
    if chosen is None:
        return (None if segment is None else Segment(*segment)), duration_s
    length = float("inf") if duration_s is None else duration_s
    if chosen[0] >= length:
        raise ValueError(f"{chosen[0]:g}-{chosen[1]:g} s starts after the end of the clip ({length:g} s)")
    offset = segment[0] if segment is not None else 0.0
    start, end = offset + chosen[0], offset + min(chosen[1], length)
    return Segment(start, end), end - start


def _manifest_row(video: dict[str, str], segment: Segment | None, duration_s: float | None, class_row: ClassRow,
                  index_path: Path) -> ManifestRow:
    """The manifest row of a kept video: its filmstrip index row's media columns, its class's group and SR.

    Raises:
        InputError: a media column of the index row that is not of its type.
    """
    media, unreadable = parse_descriptive_columns(video)
    if unreadable:
        raise InputError(f"{index_path}: clip {video['clip_id']!r} has unreadable {', '.join(unreadable)}; render "
                         "the filmstrips again")
    media |= {"duration_s": duration_s, "group": class_row.group, "sr": class_row.sr}
    return ManifestRow(video["clip_id"], resolve_path(video["video"], index_path.parent), class_row.class_name, SPLIT,
                       segment, **media)


def build_evaluation_set(config: BuildConfig) -> BuildSummary:
    """Assemble the evaluation set from the annotators' decisions, the class table and the filmstrip index.

    A video is kept when it has a filmstrip, its class is in the class table, its decision is keep (each of its
    reviewers said yes) and, with `require_audio`, it has an audio track; a class keeps its videos when it has at
    least `min_videos_per_class` of them. Everything else is dropped with its reason (a video that could not be
    decoded is noted with the decoder's reason, never an error).

    Writes into `out_dir`: `manifest.csv` (clip_id, path relative to it, class_name, split "unseen", start_s, end_s
    (the candidate's segment, narrowed to the annotators' span; blank: the whole file), group, sr, has_audio,
    duration_s, width_px, height_px, fps, sample_rate_hz, audio_channels; `features.manifest.read_clip_list` and the
    MZSL protocol's groups file read it), `classes.csv` (class_name, sr, group, videos, nearest seen class and
    dataset), `dropped.csv` (clip_id, class_name, reason), `statistics.md` (classes and videos per group, videos per
    class, videos without audio per class), `videos_per_class.png` and `build.json`.

    Raises:
        FileNotFoundError: a missing input.
        ValueError: malformed inputs, a class table whose groups contradict its SR or that lists a seen class,
            decisions for videos the index does not list or of another class, or no video left.
    """
    classes = {row.class_name: row for row in read_class_table(config.classes)}
    _check_class_table(Path(config.classes), list(classes.values()), config.edges)
    index_path = Path(config.filmstrips)
    index = {row["clip_id"]: row for row in read_index(index_path)}
    decisions = read_decisions(Path(config.decisions))
    dropped_rows: list[list[str]] = []
    dropped: Counter = Counter()

    def drop(clip_id: str, class_name: str, reason: str, detail: str = "") -> None:
        dropped[reason] += 1
        dropped_rows.append([clip_id, class_name, f"{reason}: {detail}" if detail else reason])

    decided: set[str] = set()
    kept: dict[str, list[ManifestRow]] = {name: [] for name in classes}
    for line, row in enumerate(decisions, start=2):
        clip_id, name = row["clip_id"], row["class_name"]
        if clip_id not in index:
            raise InputError(f"{config.decisions} line {line}: clip {clip_id!r} is not in the filmstrip index "
                             f"{index_path}; use the decisions made from that index's sheets")
        if index[clip_id]["class_name"] != name:
            raise InputError(f"{config.decisions} line {line}: clip {clip_id!r} has class {name!r}, the index "
                             f"{index_path} says {index[clip_id]['class_name']!r}")
        if clip_id in decided:
            raise InputError(f"{config.decisions} line {line}: clip {clip_id!r} is listed twice")
        decided.add(clip_id)
        video = index[clip_id]
        if video["status"] != "ok":
            drop(clip_id, name, "could not be decoded", video["reason"])
        elif name not in classes:
            drop(clip_id, name, "class not in the class table")
        elif row["decision"] == "mixed":
            votes = ", ".join(f"{c} {row[c]}" for c in LABELS if row.get(c, "0") != "0")
            drop(clip_id, name, "mixed annotations", votes)
        elif row["decision"] == "rejected":
            drop(clip_id, name, "no reviewer said yes")
        elif row["decision"] == "too-few-reviews":
            drop(clip_id, name, "too few reviewers", f"{sum(int(row.get(c) or 0) for c in LABELS)} labelled it")
        else:
            try:
                segment, duration_s = _clip_span(video, row, f"{config.decisions} line {line}")
            except ValueError as error:
                drop(clip_id, name, "annotated span after the end", str(error))
                continue
            kept[name].append(_manifest_row(video, segment, duration_s, classes[name], index_path))
    for clip_id, video in index.items():
        if clip_id in decided:
            continue
        if video["status"] != "ok":
            drop(clip_id, video["class_name"], "could not be decoded", video["reason"])
        else:
            drop(clip_id, video["class_name"], "not annotated")
    without_audio = {name: (sum(not v.has_audio for v in videos), len(videos))
                     for name, videos in kept.items() if videos}
    if config.require_audio:
        for name, videos in kept.items():
            for video in videos:
                if not video.has_audio:
                    drop(video.clip_id, name, "no audio track")
            kept[name] = [video for video in videos if video.has_audio]
    dropped_classes = [name for name, videos in kept.items() if len(videos) < config.min_videos_per_class]
    for name in dropped_classes:
        for video in kept[name]:
            drop(video.clip_id, name, f"class has fewer than {config.min_videos_per_class} kept videos")
        del kept[name]
    if not kept:
        raise InputError(f"{config.decisions}: no video is left for the evaluation set (dropped: "
                         f"{dict(dropped)}); check the annotations and the class table")

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = [classes[name] for name in classes if name in kept]  # class table order
    manifest_rows = [video for row in final for video in sorted(kept[row.class_name], key=lambda v: v.clip_id)]
    manifest_path, classes_path = out_dir / "manifest.csv", out_dir / "classes.csv"
    dropped_path, statistics_md = out_dir / "dropped.csv", out_dir / "statistics.md"
    figure_png = out_dir / "videos_per_class.png"
    write_csv(classes_path, ("class_name", "sr", "group", "videos", "nearest_seen_class", "nearest_seen_dataset"),
               [[c.class_name, f"{c.sr:.6f}", c.group, len(kept[c.class_name]), c.nearest_seen_class,
                 c.nearest_seen_dataset] for c in final])
    write_csv(dropped_path, ("clip_id", "class_name", "reason"), dropped_rows)
    title = f"{len(final)} classes, {len(manifest_rows)} videos ({out_dir.name})"
    audio = _audio_markdown(classes, without_audio, config.require_audio)
    write_text(statistics_md, _statistics_markdown(final, kept, dropped, dropped_classes, title, audio))
    figure = videos_per_class_figure(final, kept, title)
    atomic_write(figure_png, lambda temporary: figure.savefig(temporary, format="png"))
    groups = {g: {"classes": sum(c.group == g for c in final),
                  "videos": sum(len(kept[c.class_name]) for c in final if c.group == g)} for g in DIFFICULTY_GROUPS}
    record = {
        "config": config_dict(config),
        "classes": len(final),
        "videos": len(manifest_rows),
        "groups": groups,
        "dropped": dict(dropped),
        "dropped_classes": dropped_classes,
        "without_audio": {name: {"without_audio": n, "kept_by_annotators": k}
                          for name, (n, k) in without_audio.items()},
    }
    write_json(out_dir / "build.json", record)
    # The manifest is written last: its presence means the set is complete.
    write_manifest(manifest_path, manifest_rows)
    logger.info("evaluation set: %d classes, %d videos (%s); %d videos dropped", len(final), len(manifest_rows),
                ", ".join(f"{g} {groups[g]['classes']}/{groups[g]['videos']}" for g in DIFFICULTY_GROUPS),
                sum(dropped.values()))
    silent = sum(n for n, _ in without_audio.values())
    if silent and not config.require_audio:
        logger.warning("%d of the %d videos the annotators kept have no audio track (statistics.md lists them per "
                       "class; --require-audio drops them)", silent, sum(k for _, k in without_audio.values()))
    return BuildSummary(len(final), len(manifest_rows), groups, dict(dropped), tuple(dropped_classes), without_audio,
                        manifest_path, classes_path, dropped_path, statistics_md, figure_png)
