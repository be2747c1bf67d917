"""BUILD_NOTES' generated tables equal what their raw outputs give now, and the raw-output
writer keeps provenance and never overwrites a kept file."""

import json
import os
import shutil

from benchmarks import raw_output, scale_tables, tables
from conftest import REPO_ROOT


def test_generated_tables_in_build_notes_match_their_raw_outputs():
    assert tables.main(["--check"]) == 0
    text = open(os.path.join(REPO_ROOT, "BUILD_NOTES.md"), encoding="utf-8").read()
    names = [m["name"] for m in tables.REGION.finditer(text)]
    assert {"pending", "multiworker-default", "multiworker-own-update", "recbole-reference",
            "public-quality", "short-history", "recipe-timing", "litert-recall",
            "serving-latency", "recommend-throughput"} <= set(names)
    for name in names:  # every generated table names the file it came from
        body = tables.render(name)
        assert name == "pending" or "Source: `benchmarks/results/" in body


def test_a_hand_edited_figure_fails_the_check(tmp_path):
    notes = tmp_path / "NOTES.md"
    shutil.copy(os.path.join(REPO_ROOT, "BUILD_NOTES.md"), notes)
    text = notes.read_text()
    assert "| 1.41 |" in text
    notes.write_text(text.replace("| 1.41 |", "| 1.14 |", 1))
    assert tables.main(["--check", f"--notes={notes}"]) == 1
    assert tables.main(["--write", f"--notes={notes}"]) == 0
    assert tables.main(["--check", f"--notes={notes}"]) == 0
    assert notes.read_text() == text


def test_a_table_without_its_raw_output_shows_the_command_not_numbers(monkeypatch, tmp_path):
    monkeypatch.setattr(raw_output, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(raw_output.find, "__defaults__", (None, str(tmp_path)))
    monkeypatch.setattr(raw_output.newest, "__defaults__", (None, str(tmp_path)))
    body = tables.render("multiworker-own-update")
    assert body.startswith("(No kept raw output yet: `python benchmarks/multiworker_scale.py")
    assert not any(ch.isdigit() for ch in body.split("`")[0])


def test_raw_output_records_provenance_and_never_overwrites(tmp_path):
    run = raw_output.Run("unit_bench", tag="t", note="quiet")
    first = run.write({"median": 2.0}, {"samples": [1.0, 2.0, 3.0]}, results_dir=str(tmp_path))
    second = raw_output.Run("unit_bench", tag="t").write({"median": 3.0}, {"samples": [3.0]},
                                                         results_dir=str(tmp_path))
    assert first != second and os.path.basename(second).endswith("_2.json")
    saved = json.load(open(first))
    prov = saved["provenance"]
    assert saved["raw"]["samples"] == [1.0, 2.0, 3.0] and saved["summary"]["median"] == 2.0
    assert {"commit", "dirty", "command", "machine", "versions", "started_utc",
            "finished_utc", "load"} <= set(prov)
    assert prov["machine"]["cpus"] == os.cpu_count() and prov["load"]["note"] == "quiet"
    assert len(prov["load"]["loadavg_before"]) == 3
    assert os.path.basename(first).startswith(f"unit_bench_{prov['commit'][:7]}_t")
    newest = raw_output.newest("unit_bench", "t", results_dir=str(tmp_path))
    assert newest["summary"]["median"] == 3.0
    assert raw_output.percentile([1, 2, 3, 4], 50) == 2.5


def test_every_kept_output_is_in_the_raw_output_format():
    """A script that writes its own format again would leave its file out of every table
    (`raw_output.find` skips it): each file under benchmarks/results/ is one `find` reads,
    named after its benchmark, commit, tag and dirty flag."""
    results = os.path.join(REPO_ROOT, "benchmarks", "results")
    names = sorted(n for n in os.listdir(results) if n.endswith(".json"))
    assert names
    for name in names:
        payload = json.load(open(os.path.join(results, name), encoding="utf-8"))
        assert {"benchmark", "tag", "provenance", "summary", "raw"} <= set(payload), name
        prov = payload["provenance"]
        assert {"commit", "dirty", "command", "load"} <= set(prov), name
        expected = "_".join([payload["benchmark"], str(prov["commit"])[:7]]
                            + ([payload["tag"]] if payload["tag"] else [])
                            + (["dirty"] if prov["dirty"] else []))
        assert name == expected + ".json" or name.startswith(expected + "_"), name
        found = raw_output.find(payload["benchmark"], payload["tag"], results_dir=results)
        assert name in [os.path.basename(p["path"]) for p in found], name


def test_each_recbole_reference_keeps_its_own_model_figures(monkeypatch, tmp_path):
    """A RecBole SASRec output kept after NextItNet's is shown as SASRec's and leaves the
    NextItNet row with NextItNet's figures (an any-tag `newest` would swap them)."""
    results = os.path.join(REPO_ROOT, "benchmarks", "results")
    for name in ("recbole_reference_02f6d53_seed2020.json",
                 "public_quality_f5f9e28_ml100k_recbole_split_3seeds.json"):
        shutil.copy(os.path.join(results, name), tmp_path / name)
    monkeypatch.setattr(raw_output.find, "__defaults__", (None, str(tmp_path)))
    monkeypatch.setattr(raw_output.newest, "__defaults__", (None, str(tmp_path)))
    sasrec = {"test": {"HR@10": 0.1111, "NDCG@10": 0.0555, "MRR@10": 0.0333},
              "best_valid_epoch": 7, "epochs_run": 18, "model": "SASRec"}
    raw_output.Run("recbole_reference", tag="sasrec_seed2020").write(
        sasrec, dict(sasrec, config={"seed": 2020}, training_stopped_by="time_budget"),
        results_dir=str(tmp_path))
    reference = tables.render("recbole-reference")
    assert ("| RecBole 1.2.1 NextItNet | 2020 | 18 | 30 | early stopping | 0.0880 | 0.0403 | "
            "0.0262 |") in reference
    assert ("| RecBole 1.2.1 SASRec | 2020 | 7 | 18 | time budget | 0.1111 | 0.0555 | "
            "0.0333 |") in reference
    seeds = tables.render("recbole-split-seeds")
    assert ("| RecBole NextItNet (seed 2020, its kept reference) | | 0.0880 | 0.0403 | 0.0262 |"
            in seeds)
    assert ("| RecBole SASRec (seed 2020, its kept reference) | | 0.1111 | 0.0555 | 0.0333 |"
            in seeds)
    assert "Seeds above RecBole's SASRec figure (seed 2020) on every metric: 0 of 3." in seeds


def test_suite_time_reads_pytest_durations_and_the_result_line():
    """benchmarks/suite_time.py's parser on pytest's own output (xdist's and a failure's)."""
    from benchmarks import suite_time

    output = """bringing up nodes...
....F.                                                                   [100%]
=================================== FAILURES ===================================
============================= slowest durations ==============================
371.37s call     tests/test_readme.py::test_the_readme_runs_as_written
2.50s setup    tests/test_export.py::test_a[cau serial-causal]
1.25s call     tests/test_export.py::test_a[cau serial-causal]
0.00s teardown tests/test_layers.py::test_b
1 failed, 536 passed, 2 skipped in 1037.13s (0:17:17)
"""
    durations, result = suite_time.parse(output)
    assert result == "1 failed, 536 passed, 2 skipped in 1037.13s (0:17:17)"
    assert durations[1] == (2.5, "setup", "tests/test_export.py::test_a[cau serial-causal]")
    assert suite_time.per_file(durations) == {"tests/test_readme.py": 371.37,
                                              "tests/test_export.py": 3.75,
                                              "tests/test_layers.py": 0.0}
    assert suite_time.parse("537 passed in 9.10s")[1] == "537 passed in 9.10s"


def test_paired_difference_pairs_users_and_averages_seeds_first():
    """Worked by hand: 5 users, ours over 2 seeds, the reference over 1 (users paired out of
    order would change the interval; the first seed alone would change MRR)."""
    import math

    import pytest

    from benchmarks.quality_tables import paired_difference

    ours = [{"e": 1, "a": 1, "b": 20, "c": 3, "d": 11}, {"a": 1, "b": 10, "c": 30, "d": 11, "e": 4}]
    reference = [{"a": 2, "b": 20, "c": 3, "d": 1, "e": 50}]
    hr = paired_difference(ours, reference, "hr")
    # per-user HR@10: ours a 1, b 0.5, c 0.5, d 0, e 1; reference a 1, b 0, c 1, d 1, e 0
    differences = [0.0, 0.5, -0.5, -1.0, 1.0]
    error = (sum(x ** 2 for x in differences) / 4) ** 0.5 / 5 ** 0.5
    assert hr["users"] == 5 and hr["ours"] == pytest.approx(0.6)
    assert hr["reference"] == pytest.approx(0.6) and hr["difference"] == pytest.approx(0.0)
    assert (hr["low"], hr["high"]) == pytest.approx((-1.96 * error, 1.96 * error))
    mrr = paired_difference(ours, reference, "mrr")
    assert mrr["ours"] == pytest.approx((1 + 0.05 + (1 / 3) / 2 + 0 + (1 + 0.25) / 2) / 5)
    ndcg = paired_difference(ours, reference, "ndcg")
    assert ndcg["reference"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4) + 1) / 5)
    with pytest.raises(ValueError, match="not the same test split"):
        paired_difference(ours, [{"a": 2, "b": 20, "c": 3, "d": 1, "f": 1}], "hr")


def test_the_paired_table_reads_each_users_ranks_from_both_kept_outputs(monkeypatch, tmp_path):
    """Kept outputs with per-user ranks on both sides render one row per RecBole model with
    ranks, the differences taken user by user; a reference on another log (genres left out)
    is not paired."""
    monkeypatch.setattr(raw_output.find, "__defaults__", (None, str(tmp_path)))
    monkeypatch.setattr(raw_output.newest, "__defaults__", (None, str(tmp_path)))
    assert tables.TABLES["ml100k-paired-recbole"][0]() is None  # nothing kept: pending
    users = [str(u) for u in range(1, 101)]
    ours = [{"dataset": "ml100k", "run": "recipe", "seed": seed,
             "settings": {"recipe": {"flags": ["--epochs=60"]}},
             "test_ranks": {u: (1 if int(u) <= 30 else 50) for u in users}} for seed in (0, 1)]
    raw_output.Run("public_quality", tag="ml100k_small_log_ranks_3seeds").write(
        {"results": ours}, {"results": ours}, results_dir=str(tmp_path))
    reference = {"config": {"seed": 2020}, "epochs_run": 40,
                 "training_stopped_by": "early_stopping",
                 "test_ranks": {u: (1 if int(u) <= 20 else 50) for u in users}}
    raw_output.Run("recbole_reference", tag="sasrec_seed2020").write(
        {"test": {}}, reference, results_dir=str(tmp_path))
    raw_output.Run("recbole_reference", tag="seed2020").write(  # NextItNet: a Comedy-less log
        {"test": {}}, dict(reference, data={"excluded_genres": ["Comedy"]}),
        results_dir=str(tmp_path))
    lines = tables.TABLES["ml100k-paired-recbole"][0]()
    rows = [line for line in lines if line.startswith("| recipe")]
    assert len(rows) == 1 and "RecBole 1.2.1 SASRec, seed 2020, 40 epochs, stopped by early " \
        "stopping" in rows[0]
    assert "| 0, 1 |" in rows[0] and "| 100 | 0.3000 / 0.2000 | +0.1000 [" in rows[0]


def test_several_recbole_seeds_are_each_shown_and_paired_together(monkeypatch, tmp_path):
    """Two kept SASRec seeds: each has its own row in the reference table and in the paired
    table, and one more paired row takes each user's figure as the mean over both seeds;
    NextItNet's `seed2021` is never read as SASRec's `sasrec_seed2021`."""
    monkeypatch.setattr(raw_output.find, "__defaults__", (None, str(tmp_path)))
    monkeypatch.setattr(raw_output.newest, "__defaults__", (None, str(tmp_path)))
    users = [str(u) for u in range(1, 101)]
    ours = [{"dataset": "ml100k", "run": "recipe", "seed": 0,
             "settings": {"recipe": {"flags": ["--epochs=60"]}},
             "test_ranks": {u: (1 if int(u) <= 30 else 50) for u in users}}]
    raw_output.Run("public_quality", tag="ml100k_small_log_ranks_3seeds").write(
        {"results": ours}, {"results": ours}, results_dir=str(tmp_path))
    for seed, hits, epochs in ((2020, 20, 28), (2021, 40, 31)):
        reference = {"config": {"seed": seed}, "epochs_run": epochs,
                     "training_stopped_by": "early_stopping", "best_valid_epoch": epochs - 11,
                     "test_ranks": {u: (1 if int(u) <= hits else 50) for u in users}}
        test = {"HR@10": hits / 100, "NDCG@10": hits / 100, "MRR@10": hits / 100}
        raw_output.Run("recbole_reference", tag=f"sasrec_seed{seed}").write(
            {"test": test, "best_valid_epoch": epochs - 11, "epochs_run": epochs},
            reference, results_dir=str(tmp_path))
    nextitnet = {"config": {"seed": 2021}, "epochs_run": 30,
                 "training_stopped_by": "early_stopping"}
    raw_output.Run("recbole_reference", tag="seed2021").write(
        {"test": {"HR@10": 0.05, "NDCG@10": 0.02, "MRR@10": 0.01}, "best_valid_epoch": 19,
         "epochs_run": 30}, nextitnet, results_dir=str(tmp_path))
    assert [(model, p["tag"]) for model, p in scale_tables.recbole_references()] == [
        ("NextItNet", "seed2021"), ("SASRec", "sasrec_seed2020"), ("SASRec", "sasrec_seed2021")]
    reference = tables.render("recbole-reference")
    assert "| RecBole 1.2.1 SASRec | 2020 | 17 | 28 | early stopping | 0.2000 |" in reference
    assert "| RecBole 1.2.1 SASRec | 2021 | 20 | 31 | early stopping | 0.4000 |" in reference
    rows = [line for line in tables.TABLES["ml100k-paired-recbole"][0]()
            if line.startswith("| recipe")]
    assert len(rows) == 3  # NextItNet has no ranks: not paired
    assert "SASRec, seed 2020, 28 epochs" in rows[0] and "| 0.3000 / 0.2000 | +0.1000 [" in rows[0]
    assert "SASRec, seed 2021, 31 epochs" in rows[1] and "| 0.3000 / 0.4000 | -0.1000 [" in rows[1]
    assert ("SASRec, seeds 2020 (28 epochs, stopped by early stopping), 2021 (31 epochs, "
            "stopped by early stopping), averaged per user") in rows[2]
    assert "| 0.3000 / 0.3000 | +0.0000 [" in rows[2]
