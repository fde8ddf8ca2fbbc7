"""The study's Markdown tables from constructed ``compare`` results (no model, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from metagna_tf.metrics import paired_difference
from tools.results_sample_aware_table import stepsize_table


def model(name, accuracies):
    accuracies = np.asarray(accuracies, float)
    return {"name": name, "accuracy": float(accuracies.mean()), "ci95": 0.01,
            "episode_accuracies": accuracies.tolist()}


def test_stepsize_table_columns_brackets_and_seed_row():
    rng = np.random.default_rng(0)
    head = rng.uniform(0.6, 1.0, 40)
    models = []
    for seed in (0, 1):
        for algorithm, drop in (("maml", 0.2), ("metagna", 0.04)):
            base = f"{algorithm}_seed{seed}"
            models += [model(f"{base}@0", head),
                       model(f"{base}@3@lr0.1", head - drop + rng.normal(0, 0.01, 40)),
                       model(f"{base}@3@lr0.025", head - drop / 4)]
    text = stepsize_table({"models": models})
    lines = text.splitlines()
    assert lines[0] == "| model | head alone (0 steps) | 3 steps, lr 0.1 | 3 steps, lr 0.025 |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| maml_seed0", "| metagna_seed0", "| maml_seed1", "| metagna_seed1",
        "| **Meta-GNA − MAML, seeds 0-2**"]
    # a step column carries the paired difference against the same model's head alone
    by_name = {m["name"]: np.asarray(m["episode_accuracies"]) for m in models}
    d = paired_difference(by_name["maml_seed0@0"], by_name["maml_seed0@3@lr0.1"])
    assert f"({100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f} *)" in lines[2]
    assert lines[3].split(" | ")[3].endswith("(-1.00 ± 0.00 *) |")  # metagna seed 0, lr 0.025
    # the seed row: Meta-GNA minus MAML of the per-episode means over seeds, per column
    seed_row = lines[-1].split(" | ")
    assert seed_row[1] == "+0.00 ± 0.00"
    assert seed_row[3] == "+4.00 ± 0.00 * |"
    assert float(seed_row[2].split()[0]) == pytest.approx(16.0, abs=0.5)


def test_inner_loop_plateau_checks_the_last_fifths_mean_and_best():
    from tools.results_inner_loop_table import plateau

    rising = {"iterations": 1000, "curve": [[i, 0.5 + i / 10000] for i in range(100, 1001, 100)]}
    p = plateau(rising)  # last fifth (900, 1000) against (700, 800): +2 points, best +2 too
    assert p["done"] and p["plateau"] is False
    assert p["mean_gain"] == pytest.approx(0.02) and p["best_gain"] == pytest.approx(0.02)
    flat = {"iterations": 1000, "curve": [[i, 0.9] for i in range(100, 1001, 100)]}
    assert plateau(flat)["plateau"] is True
    # a dip in the fifth before: the last fifth is +3 points over it, but below the fifth
    # before that, and its best is below the best before: plateaued
    dip = {"iterations": 1000, "curve": [[100, 0.5], [200, 0.6], [300, 0.8], [400, 0.8],
                                         [500, 0.95], [600, 0.95], [700, 0.9], [800, 0.9],
                                         [900, 0.93], [1000, 0.93]]}
    p = plateau(dip)
    assert p["mean_gain"] == pytest.approx(-0.02) and p["best_gain"] == pytest.approx(-0.02)
    assert p["plateau"] is True
    # a flat mean with a new best in the last fifth (the tested checkpoint changes): not yet
    peak = {"iterations": 1000, "curve": [[100, 0.5], [200, 0.6], [300, 0.9], [400, 0.9],
                                          [500, 0.9], [600, 0.9], [700, 0.9], [800, 0.9],
                                          [900, 0.87], [1000, 0.93]]}
    p = plateau(peak)
    assert p["mean_gain"] == pytest.approx(0.0) and p["best_gain"] == pytest.approx(0.03)
    assert p["plateau"] is False
    training = {"iterations": 1000, "curve": [[100, 0.6], [200, 0.7]]}
    assert plateau(training) == {"done": False, "at": 200, "best": 0.7}


def test_inner_loop_setting_table_pairs_each_model_with_maml_of_its_seed():
    from tools.results_inner_loop_table import head_table, parse, setting_table

    assert parse("authors_proto_seed1") == ("authors", "proto", 1)
    assert parse("maml_seed2") == ("maml", "linear", 2)
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 1.0, 50)
    models = [model("maml_seed0", base), model("maml_seed1", base - 0.02),
              model("authors_seed0", base + 0.03), model("authors_seed1", base - 0.01),
              model("ours_seed0", base + 0.01), model("lslr_seed0", base),
              model("maml_proto_seed0", base + 0.05), model("pixel_nn", base - 0.3)]
    lines = setting_table({"models": models}).splitlines()
    rows = {line.split(" | ")[0] + " " + line.split(" | ")[1]: line for line in lines[2:]}
    assert "+3.00 ± 0.00 *" in rows["| Meta-GNA, authors' form 0"]  # against maml_seed0
    assert "+1.00 ± 0.00 *" in rows["| Meta-GNA, authors' form 1"]  # against maml_seed1
    assert rows["| Meta-GNA, authors' form 0"].endswith("| +2.00 ± 0.00 * |")  # authors - ours
    assert "+2.00 ± 0.00 * (per seed: +3.00, +1.00)" in lines[-2]  # the mean: (3 + 1) / 2
    assert lines[-1].startswith("| pixel nearest neighbour")
    assert "maml_proto" not in "\n".join(lines)  # the prototype head has its own table
    heads = head_table({"models": models}).splitlines()
    assert heads[2].startswith("| MAML |") and heads[2].endswith("| +5.00 ± 0.00 * |")
    assert "over the seeds" not in lines[-2]  # two seeds: no interval over seeds


def test_inner_loop_three_seeds_add_the_t_interval_over_the_seeds():
    from tools.results_inner_loop_table import setting_table

    base = np.random.default_rng(2).uniform(0.5, 0.9, 40)
    models = [model(f"maml_seed{s}", base) for s in range(3)]
    models += [model(f"authors_seed{s}", base + gain) for s, gain in enumerate((0.03, 0.01, 0.02))]
    mean_row = setting_table({"models": models}).splitlines()[-1]
    # per-seed differences 3, 1, 2 points: mean 2, sd 1, t(0.975, 2 dof) = 4.303 -> 4.303 / sqrt(3)
    assert "(per seed: +3.00, +1.00, +2.00; over the seeds: +2.00 ± 2.48)" in mean_row
    assert "+2.00 ± 0.00 *" in mean_row  # the episode interval holds the seeds fixed


def test_inner_loop_tables_print_only_the_sections_asked_for(tmp_path, capsys):
    import json

    from tools.results_inner_loop_table import main

    base = np.linspace(0.6, 1.0, 20)
    for protocol in ("indomain", "cross_alphabet"):
        result = {"episodes": 20, "models": [model("maml_seed0", base),
                                             model("ours_seed0", base + 0.01)]}
        (tmp_path / f"{protocol}_5w1s.json").write_text(json.dumps(result))
    main(["tables", "--record", str(tmp_path), "--section", "cross_alphabet"])
    text = capsys.readouterr().out
    assert "### cross-alphabet" in text and "cross_alphabet_5w1s.json" in text
    assert "in-domain" not in text and "indomain_5w1s.json" not in text
    assert text.rstrip().endswith("(* the paired 95% interval excludes zero)")
    main(["tables", "--record", str(tmp_path), "--section", "budget"])  # no curves recorded
    assert capsys.readouterr().out == ""
    main(["tables", "--record", str(tmp_path)])
    text = capsys.readouterr().out
    assert text.index("### in-domain") < text.index("### cross-alphabet")
    assert text.count("(* the paired 95% interval excludes zero)") == 1


def test_inner_loop_curves_keep_finished_runs_whose_folders_are_gone(tmp_path, capsys):
    import json

    from tools.results_inner_loop_table import main

    record, runs = tmp_path / "record", tmp_path / "runs"
    record.mkdir()
    finished = {"iterations": 200, "inner_lr": 0.4, "val_episodes": 100,
                "curve": [[100, 0.8], [200, 0.9]]}
    (record / "validation_curves.json").write_text(json.dumps({
        "indomain/maml_seed0": finished,                                   # gone, finished: kept
        "cross_alphabet/ours_seed0": {**finished, "curve": [[100, 0.7]]},  # gone, unfinished
        "indomain/ours_seed0": {**finished, "curve": [[100, 0.5]]}}))      # here: replaced
    work = runs / "indomain" / "ours_seed0"
    work.mkdir(parents=True)
    (work / "config.json").write_text(json.dumps({"iterations": 200, "inner_lr": 0.4,
                                                  "val_episodes": 100}))
    (work / "metrics.jsonl").write_text(
        '{"iteration": 100, "val_accuracy": 0.6}\n{"iteration": 200, "loss": 1.0}\n')
    main(["curves", str(runs), "--record", str(record)])
    assert "dropped unfinished: cross_alphabet/ours_seed0" in capsys.readouterr().out
    curves = json.loads((record / "validation_curves.json").read_text())
    assert list(curves) == ["indomain/maml_seed0", "indomain/ours_seed0"]
    assert curves["indomain/maml_seed0"] == finished
    assert curves["indomain/ours_seed0"]["curve"] == [[100, 0.6]]


def test_inner_loop_curves_keep_a_finished_run_while_it_trains_again(tmp_path, capsys):
    import json

    from tools.results_inner_loop_table import main

    record, runs = tmp_path / "record", tmp_path / "runs"
    record.mkdir()
    finished = {"iterations": 200, "inner_lr": 0.4, "val_episodes": 100,
                "curve": [[100, 0.8], [200, 0.9]]}
    (record / "validation_curves.json").write_text(json.dumps(
        {"cross_alphabet/maml_seed0": finished, "indomain/maml_seed1": finished,
         "indomain/maml_seed2": finished}))

    def folder(name, iterations, rows):
        work = runs / name
        work.mkdir(parents=True)
        (work / "config.json").write_text(json.dumps({"iterations": iterations,
                                                      "inner_lr": 0.4, "val_episodes": 100}))
        (work / "metrics.jsonl").write_text("".join(
            json.dumps({"iteration": i, "val_accuracy": a}) + "\n" for i, a in rows))

    folder("cross_alphabet/maml_seed0", 300, [[100, 0.5]])  # from 0 to a larger budget
    folder("indomain/maml_seed1", 300, [[100, 0.8], [200, 0.9], [300, 0.95]])  # resumed: done
    folder("indomain/maml_seed2", 300, [[100, 0.8], [200, 0.9]])  # resumed, still training
    main(["curves", str(runs), "--record", str(record)])
    assert "kept while trained again: cross_alphabet/maml_seed0" in capsys.readouterr().out
    curves = json.loads((record / "validation_curves.json").read_text())
    assert curves["cross_alphabet/maml_seed0"] == finished
    assert curves["indomain/maml_seed1"]["curve"][-1] == [300, 0.95]
    assert curves["indomain/maml_seed2"]["iterations"] == 300  # the folder's, unfinished
    # once the new run has finished, it replaces the record
    (runs / "cross_alphabet/maml_seed0/metrics.jsonl").write_text(
        '{"iteration": 100, "val_accuracy": 0.5}\n{"iteration": 200, "val_accuracy": 0.6}\n'
        '{"iteration": 300, "val_accuracy": 0.7}\n')
    main(["curves", str(runs), "--record", str(record)])
    curves = json.loads((record / "validation_curves.json").read_text())
    assert curves["cross_alphabet/maml_seed0"]["curve"][-1] == [300, 0.7]


def test_inner_loop_steps_table_orders_runs_by_model_head_seed_and_pairs_with_no_step():
    from tools.results_inner_loop_table import steps_table

    base = np.full(20, 0.2)
    models = [model(f"{run}@{k}", base + 0.1 * k / 5) for run in
              ("authors_seed1", "maml_seed1", "maml_proto_seed0", "maml_seed0") for k in (0, 5)]
    lines = steps_table({"models": models}).splitlines()
    assert lines[0] == "| run | 0 steps | 5 steps |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| maml_seed0", "| maml_seed1", "| maml_proto_seed0", "| authors_seed1"]
    assert lines[2].endswith("| 30.00 ± 1.00 (+10.00 ± 0.00 *) |")  # against its own 0 steps


def test_inner_loop_tables_write_replaces_only_the_marked_regions(tmp_path):
    import json

    from tools.results_inner_loop_table import main, markers

    base = np.linspace(0.6, 1.0, 20)
    result = {"episodes": 20, "models": [model("maml_seed0", base),
                                         model("ours_seed0", base + 0.01)]}
    (tmp_path / "cross_alphabet_5w1s.json").write_text(json.dumps(result))
    begin, end = markers("cross_alphabet")
    doc = tmp_path / "results.md"
    doc.write_text(f"# results\n\nprose before\n\n{begin}\nold table\n{end}\n\nprose after\n")
    main(["tables", "--record", str(tmp_path), "--section", "cross_alphabet",
          "--write", str(doc)])
    text = doc.read_text()
    assert text.startswith("# results\n\nprose before\n\n" + begin + "\n### cross-alphabet")
    assert text.endswith("(* the paired 95% interval excludes zero)\n" + end
                         + "\n\nprose after\n")
    assert "old table" not in text and "cross_alphabet_5w1s.json" in text
    main(["tables", "--record", str(tmp_path), "--section", "cross_alphabet",
          "--write", str(doc)])
    assert doc.read_text() == text  # idempotent
    # a section without markers, or without records, leaves the file as it was
    for section, message in (("indomain", "needs exactly one"), ("budget", "needs exactly one")):
        with pytest.raises(SystemExit, match=message):
            main(["tables", "--record", str(tmp_path), "--section", "cross_alphabet",
                  "--section", section, "--write", str(doc)])
        assert doc.read_text() == text
    b, e = markers("indomain")
    doc.write_text(text + f"\n{b}\n{e}\n")
    with pytest.raises(SystemExit, match="nothing recorded for the indomain section"):
        main(["tables", "--record", str(tmp_path), "--section", "indomain", "--write", str(doc)])
    assert doc.read_text() == text + f"\n{b}\n{e}\n"


def test_budget_check_pairs_a_runs_two_checkpoints_across_a_git_revision(tmp_path, monkeypatch,
                                                                          capsys):
    """tools/budget_check.py: the record at a revision against the working tree's."""
    import json
    import subprocess

    from tools.budget_check import main
    from tools.results_inner_loop_table import SETTINGS

    rng = np.random.default_rng(1)
    record = tmp_path / "record"
    record.mkdir()
    before = {key: rng.uniform(0.5, 1.0, 30) for key, _ in SETTINGS}

    def write(accuracies, sha):
        for key, _ in SETTINGS:
            entry = model("maml_seed1", accuracies[key])
            entry.update(checkpoint=f"runs/best/ckpt-{sha}", checkpoint_sha256=sha * 8)
            (record / f"indomain_{key}.json").write_text(json.dumps(
                {"episodes_sha256": "e" * 64, "models": [entry, model("pixel_nn", [0.2] * 30)]}))

    write(before, "100")
    curve = [[i, 0.9] for i in range(100, 1001, 100)]
    (record / "validation_curves.json").write_text(json.dumps(
        {"indomain/maml_seed1": {"iterations": 1000, "inner_lr": 0.4, "curve": curve}}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "before"], cwd=tmp_path, check=True)
    after = {key: np.clip(a + 0.05, 0, 1) for key, a in before.items()}
    write(after, "900")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "check.txt"
    assert main(["indomain/maml_seed1", "--before", "HEAD", "--record", "record",
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    assert "(ckpt-100, SHA-256 100100100100...)" in text and "ckpt-900" in text
    d = paired_difference(before["5w1s"], after["5w1s"])
    row = next(line for line in text.splitlines() if line.startswith("5-way 1-shot, clean"))
    assert row.split()[-6:] == [f"{100 * before['5w1s'].mean():.2f}",
                                f"{100 * after['5w1s'].mean():.2f}", f"{100 * d['mean']:+.2f}",
                                "+/-", f"{100 * d['ci95']:.2f}", "*"]
    assert "Plateau check: mean +0.00, best +0.00: plateaued." in text
    # the same checkpoint on both sides is an error, not a table of zeros
    write(before, "100")
    with pytest.raises(SystemExit, match="same checkpoint"):
        main(["indomain/maml_seed1", "--before", "HEAD", "--record", "record"])
