"""The demo report's table and sentences come from its numbers (workflows.demo)."""

import shlex
import signal
import sys

import pytest

from tests.processes import REPO, start_command, stop_and_collect, wait_for_workers
from workflows import demo


def _results(seeds=3, **overrides):
    std = 1.0 if seeds > 1 else None
    values = {"zsl": 60.0, "gzsl_s": 90.0, "gzsl_u": 0.0, "gzsl_hm": 0.0, "calibrated_gzsl_s": 60.0,
              "calibrated_gzsl_u": 50.0, "calibrated_gzsl_hm": 54.5}
    values.update(overrides)
    results = {"seeds": list(range(seeds)), "chance_zsl": 16.67, "chance_gzsl": 4.17}
    for key, value in values.items():
        results[key], results[f"{key}_std"] = value, std
        results[f"control_{key}"], results[f"control_{key}_std"] = 18.0, std
    results["zsl_over_chance"] = round(results["zsl"] / 16.67, 2)
    results["control_zsl_over_chance"] = round(results["control_zsl"] / 16.67, 2)
    return results


def test_findings_when_calibration_helps():
    zsl, gzsl, calibration = demo.demo_findings(_results())
    assert "ZSL is 60.00% against 16.67% chance, 3.6x (at least 3x, clearly above chance)" in zsl
    assert "18.00%, 1.1x (within 1.5x of chance" in zsl
    assert gzsl.startswith("Raw GZSL favours the seen classes (S 90.00% against U 0.00%)")
    assert "raises HM from 0.00% to 54.50%, more than the seed spread (± 1.00)" in calibration


def test_findings_when_calibration_fails_say_so():
    findings = demo.demo_findings(_results(zsl=40.0, calibrated_gzsl_u=0.0, calibrated_gzsl_hm=0.0))
    assert "2.4x (below 3x: NOT clearly above chance)" in findings[0]
    assert findings[-1].endswith("does not raise HM here (0.00% raw, 0.00% calibrated, U 0.00%).")
    assert not any("raises" in sentence or "corrects" in sentence for sentence in findings)


def test_a_gain_within_the_seed_spread_is_no_effect():
    results = _results(gzsl_u=40.0, gzsl_hm=55.0, calibrated_gzsl_hm=55.5)
    results["calibrated_gzsl_hm_std"] = 2.0
    findings = demo.demo_findings(results)
    assert findings[-1].endswith("moves HM from 55.00% to 55.50%, within the seed spread (± 2.00): no clear effect.")
    assert "favours the seen" in findings[1]


def test_one_seed_shows_no_spread_and_every_row_has_chance_and_control():
    table = demo._table(_results(seeds=1))
    assert "±" not in table and "+-" not in table
    assert "| metric (%) | MZST, 1 seed | chance | control: shuffled embeddings, 1 seed |" in table
    rows = table.splitlines()[2:]
    assert len(rows) == 7 and all(row.endswith("| 18.00 |") for row in rows)
    assert "| GZSL U (unseen) | 0.00 | 4.17 | 18.00 |" in rows
    assert demo._mean_std([42.0]) == (42.0, None)
    assert "| ZSL (unseen candidates only) | 60.00 ± 1.00 | 16.67 | 18.00 ± 1.00 |" in demo._table(_results())


@pytest.mark.slow
def test_sigterm_during_the_demo_ends_it_in_one_line_and_leaves_no_worker(tmp_path):
    process = start_command("demo", "--out", str(tmp_path / "demo"), "--no-progress")
    wait_for_workers(process, "spawn_main", 2)  # rendering the benchmark
    err = stop_and_collect(process, signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    rerun = shlex.join([sys.executable, str(REPO / "cli.py"), "demo", "--out", str(tmp_path / "demo"), "--no-progress"])
    assert err.splitlines()[-1] == f"Interrupted (SIGTERM); rerun the same command to resume: {rerun}"


def test_the_objective_line_names_what_the_runs_optimised_and_what_s_v_is_worth():
    video = {"classes": 8, "held_out_view_accuracy": 87.5, "clips": 192, "s_v_is_nearest_by_vector": 21.88,
             "chance": 12.5, "distinct_s_v": 8}
    paper = demo.objective_text({"video_classifier": video, "objective": {
        "se_target": "kinetics+class", "rule": "kinetics", "class_vectors": "glove-6b-50d", "normalised": False}})
    assert "SE target phi(s_v) + phi(s_t), the paper's; decision rule ||f(x) - phi(s_v(x)) - phi(c)||" in paper
    assert "raw `glove-6b-50d`" in paper and "for 21.88% (chance 12.50%), 8 distinct classes" in paper
    fallback = demo.objective_text({"video_classifier": video, "objective": {
        "se_target": "class", "rule": "plain", "class_vectors": "glove-6b-50d", "normalised": True}})
    assert "SE target phi(s_t) only; decision rule ||f(x) - phi(c)||; L2-normalised" in fallback
