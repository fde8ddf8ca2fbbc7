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
