"""curate.splits: the shipped AVCA split files give the counts of data/README.md."""

import csv
import gzip

import numpy as np
import pytest

from curate import splits
from features.splits import SplitRole, split_role

# data/README.md: class counts per stage (stage 1 train / val-unseen, stage 2 seen / unseen, cls-split unseen)
_CLASSES = {
    "VGGSound": (309, 138, 69, 207, 69, 64),
    "UCF": (101, 30, 12, 42, 9, 6),
    "ActivityNet": (200, 99, 51, 150, 50, 48),
}
# data/README.md: videos of stage 2 train / test seen / test unseen (main_split)
_VIDEOS = {
    "VGGSound": (81_270, 9_032, 3_450),
    "UCF": (4_994, 555, 1_267),
    "ActivityNet": (14_534, 1_615, 4_199),
}


@pytest.fixture(scope="module", params=sorted(_CLASSES))
def main_split(request):
    return splits.load_class_split(request.param, "main_split")


def test_class_counts_match_readme(main_split):
    total, s1_train, s1_unseen, s2_seen, s2_unseen, cls_unseen = _CLASSES[main_split.dataset]
    assert len(main_split.all_classes) == total
    assert len(main_split.stages["stage_1_train"]) == len(main_split.stages["stage_1_val_seen"]) == s1_train
    assert len(main_split.stages["stage_1_val_unseen"]) == s1_unseen
    assert len(main_split.stages["stage_2_train"]) == len(main_split.stages["stage_2_test_seen"]) == s2_seen
    assert len(main_split.stages["stage_2_test_unseen"]) == s2_unseen
    cls = splits.load_class_split(main_split.dataset, "cls_split")
    assert len(cls.stages["stage_2_test_unseen"]) == cls_unseen
    assert set(cls.stages["stage_2_test_unseen"]) < set(main_split.stages["stage_2_test_unseen"])


def test_stage_structure(main_split):
    seen1, unseen1 = main_split.seen_unseen_ids(1)
    seen2, unseen2 = main_split.seen_unseen_ids(2)
    # stage 2 seen = stage 1 train + stage 1 val-unseen; test-unseen never appears in stage 1
    np.testing.assert_array_equal(seen2, np.union1d(seen1, unseen1))
    assert np.intersect1d(unseen2, seen2).size == 0
    np.testing.assert_array_equal(main_split.ids("stage_1_val_seen"), seen1)
    # ids are indices in the sorted all_class.txt
    assert list(main_split.all_classes) == sorted(main_split.all_classes)
    name = main_split.stages["stage_2_test_unseen"][0]
    assert main_split.all_classes[main_split.class_id(name)] == name


@pytest.mark.slow
def test_video_counts_match_readme(main_split):
    train, test_seen, test_unseen = (
        splits.load_stage_videos(main_split, s) for s in ("stage_2_train", "stage_2_test_seen", "stage_2_test_unseen")
    )
    assert (len(train), len(test_seen), len(test_unseen)) == _VIDEOS[main_split.dataset]
    assert train.dropped == test_seen.dropped == test_unseen.dropped == 0
    # every class of a stage has videos, and every video's class id is its label's id
    assert set(test_unseen.labels) == set(main_split.stages["stage_2_test_unseen"])
    assert [main_split.all_classes[i] for i in test_seen.class_ids[:50]] == list(test_seen.labels[:50])
    # stage 2 train = the three stage-1 parts; no video is both train and test
    stage1 = set()
    for stage in ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"):
        videos = splits.load_stage_videos(main_split, stage).video_ids
        assert not stage1 & set(videos)
        stage1 |= set(videos)
    assert stage1 == set(train.video_ids)
    assert not set(train.video_ids) & (set(test_seen.video_ids) | set(test_unseen.video_ids))


@pytest.mark.parametrize(("dataset", "videos"), [("UCF", 845), ("ActivityNet", 4_052), ("VGGSound", 3_200)])
def test_cls_split_test_unseen_drops_videos_of_removed_classes(dataset, videos):
    # the shipped cls_split CSV repeats main_split's; the class list decides
    cls = splits.load_class_split(dataset, "cls_split")
    unseen = splits.load_stage_videos(cls, "stage_2_test_unseen")
    assert len(unseen) == videos
    assert len(unseen) + unseen.dropped == _VIDEOS[dataset][2]
    assert set(unseen.labels) == set(cls.stages["stage_2_test_unseen"])


def test_ucf_case_mismatch_resolves_to_all_class_spelling():
    ucf = splits.load_class_split("ucf")
    assert "HandstandPushups" in ucf.stages["stage_1_train"]
    assert ucf.class_id("HandStandPushups") == ucf.class_id("HandstandPushups") == 36
    assert ucf.class_id(" HandstandPushups\t") == 36  # a name in the one spelling of common.names
    videos = splits.load_stage_videos(ucf, "stage_1_train")
    assert "HandStandPushups" not in videos.labels
    assert videos.labels.count("HandstandPushups") > 0


@pytest.mark.slow
def test_vggsound_all_stages_table_agrees_with_shipped_csvs():
    vgg = splits.load_class_split("VGGSound")
    path = splits.DATA_ROOT / "VGGSound" / "class-split" / "main_split_videos_all_stages.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        table = [row for row in csv.DictReader(f) if row["split"] == "stage_2_test_seen"]
    from_csv = splits.load_stage_videos(vgg, "stage_2_test_seen")
    assert {row["video_id"] for row in table} == set(from_csv.video_ids)


def test_name_map_and_errors(tmp_path):
    names = splits.load_name_map("UCF")
    assert names["CleanAndJerk"] == "Weight Lifting"
    assert splits.name_map_path("activitynet").name == "activitynet_w2v_class_names.csv"
    with pytest.raises(ValueError, match="unknown AVCA dataset"):
        splits.load_class_split("kinetics")
    with pytest.raises(ValueError, match="unknown split"):
        splits.load_class_split("UCF", "zero_split")
    with pytest.raises(FileNotFoundError, match="all_class.txt"):
        splits.load_class_split("UCF", root=tmp_path)


def test_bad_label_code_is_reported(tmp_path):
    folder = tmp_path / "UCF" / "class-split"
    (folder / "main_split").mkdir(parents=True)
    (folder / "all_class.txt").write_text("B\nA\nC\n")
    for stage in splits.STAGES:
        (folder / "main_split" / f"{stage}.txt").write_text("C\n" if stage == "stage_2_test_unseen" else "A\nB\n")
    (folder / "main_split" / "stage_1_train.csv").write_text("filename,label,label_code\nv1,A,0\nv2,B,0\n")
    ucf = splits.load_class_split("UCF", root=tmp_path)
    assert ucf.ids("stage_2_test_unseen").tolist() == [2]
    with pytest.raises(ValueError, match="line 3: label_code 0 of 'B' is not its class id 1"):
        splits.load_stage_videos(ucf, "stage_1_train", root=tmp_path)
    (folder / "main_split" / "stage_1_val_unseen.txt").write_text("C\n")
    with pytest.raises(ValueError, match="test-unseen classes also in stage 1"):
        splits.load_class_split("UCF", root=tmp_path)


@pytest.mark.parametrize(("name", "role"), [
    ("stage_1_train", SplitRole.TRAIN), ("stage_1_val_seen", SplitRole.VALIDATION),
    ("stage_1_val_unseen", SplitRole.VALIDATION), ("stage_2_train", SplitRole.TRAIN),
    ("stage_2_test_seen", SplitRole.TEST), ("stage_2_test_unseen", SplitRole.TEST),
])
def test_every_avca_stage_has_its_role_by_name_and_as_stated(name, role):
    assert split_role(name) is role
    assert splits.STAGE_ROLES[name] is role


def test_the_stated_avca_roles_cover_every_stage():
    assert set(splits.STAGE_ROLES) == set(splits.STAGES)
