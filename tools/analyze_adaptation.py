"""The paper's analysis, reconstructed: what the inner loop sees, and what the Arbiter does with it.

    python tools/analyze_adaptation.py --workdirs runs/maml runs/metagna [--episodes 100]
        [--shots 1 5] [--protocol cross_alphabet] [--plot docs/analysis.png] [--json out.json]
        [--keep-earlier]

For a fixed set of test episodes (episode seed 0, as in evaluation), at every inner step:

* the per-sample support losses: mean, std and max/mean (a histogram before the first step);
* the norm of the mean support gradient against the mean of the per-sample gradient norms
  (all tensors together; per-sample norms with BatchNorm statistics held constant, as the
  Arbiter sees them). Their ratio is 1 when every sample pulls the same way and small when
  the samples disagree: the paper's "small and unrepresentative mean gradient";
* for Meta-GNA, the Arbiter's scales, and their rank correlation with those features;
* for every model, the norm of each adapted tensor's step, |theta_l(k+1) - theta_l(k)|.

``--alpha-plot PATH`` draws, per model, the Arbiter's alpha per tensor and step (mean over the
episodes, with the interquartile range) above the steps' norms per tensor and step: the two
Arbiter forms' alphas mean different things (ours multiplies the gradient, the authors' is the
step's norm over beta), the step norms are comparable across all models.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metagna_tf.algorithms import algorithm  # noqa: E402
from metagna_tf.algorithms.inner_loop import adapt, frozen_stats_sample_norms  # noqa: E402
from metagna_tf.checkpoints import load_trained  # noqa: E402
from metagna_tf.episode_setup import EvaluationSettings, evaluation_episodes  # noqa: E402
from metagna_tf.preprocessing import to_model_input  # noqa: E402


def trace_episode(model, sx, sy, steps: int) -> list[dict]:
    """One episode's inner loop (a batch of one task), recorded step by step (eager)."""
    config = model.config
    x = to_model_input(sx, config.dtype)[None]
    y = tf.constant(sy)[None]
    ways = int(sy.max()) + 1
    inner_args = model.inner_loop_args(ways)
    adapted_ids = inner_args["adapted"] or list(range(len(model.tensor_names)))
    records, visited = [], []

    def observe(step, fast, losses, grads, scales):
        # every tensor has the task axis of one task: [0] drops it; the per-sample norms of
        # the adapted tensors only, as the Arbiter sees them
        per_sample = frozen_stats_sample_norms(model.backbone, fast, x, y).numpy()[0]  # (L, n)
        per_sample = per_sample[adapted_ids]
        visited.append([fast[i].numpy()[0] for i in adapted_ids])
        mean_grad = np.sqrt(sum(float(tf.reduce_sum(tf.square(g))) for g in grads))
        sample_total = np.sqrt((per_sample ** 2).sum(axis=0))  # (n,)
        records.append({
            "step": step, "losses": losses.numpy()[0], "grad_norms": np.array(
                [float(tf.norm(tf.reshape(g, [-1]))) for g in grads]),
            "mean_grad_norm": mean_grad, "sample_grad_norms": sample_total,
            "ratio": mean_grad / max(float(sample_total.mean()), 1e-30),
            "scales": scales.numpy()[0]})

    adapted = adapt(model.backbone, model.theta(), x, y, ways, steps=steps,
                    update=model.update_rule, observe=observe, **inner_args)
    visited.append([adapted.fast[i].numpy()[0] for i in adapted_ids])
    for j, record in enumerate(records):  # each adapted tensor's step norm at step j
        record["step_norms"] = np.array([np.linalg.norm(after - before) for before, after
                                         in zip(visited[j], visited[j + 1], strict=True)])
    final = adapted.support_losses.numpy()[0, -1]
    records.append({"step": steps, "final_mean_loss": float(final)})
    return records


def spearman(a, b) -> float:
    from scipy import stats

    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def summarize(model, traces: list[list[dict]], steps: int) -> dict:
    out = {"algorithm": model.config.algorithm, "tensors": list(model.scale_names),
           "arbiter_form": model.config.arbiter_form, "inner_lr": model.config.inner_lr,
           "steps": []}
    for j in range(steps):
        recs = [t[j] for t in traces]
        losses = [r["losses"] for r in recs]
        out["steps"].append({
            "step": j + 1,
            "loss_mean": float(np.mean([lo.mean() for lo in losses])),
            "loss_std": float(np.mean([lo.std() for lo in losses])),
            "loss_max_over_mean": float(np.mean([lo.max() / max(lo.mean(), 1e-30)
                                                 for lo in losses])),
            "mean_grad_norm": float(np.mean([r["mean_grad_norm"] for r in recs])),
            "mean_sample_grad_norm": float(np.mean([r["sample_grad_norms"].mean()
                                                    for r in recs])),
            "ratio_mean_grad_to_sample_grads": float(np.mean([r["ratio"] for r in recs])),
            "scale_mean_per_tensor": np.mean([r["scales"] for r in recs], axis=0).tolist(),
            "scale_quartiles_per_tensor": np.percentile([r["scales"] for r in recs], [25, 75],
                                                        axis=0).tolist(),
            "step_norm_mean_per_tensor": np.mean([r["step_norms"] for r in recs],
                                                 axis=0).tolist(),
        })
    out["final_loss_mean"] = float(np.mean([t[-1]["final_mean_loss"] for t in traces]))
    if model.arbiter is not None and getattr(model.arbiter, "uses_features", False):
        first = [t[0] for t in traces]
        log_scale = np.log(np.stack([r["scales"] for r in first]))  # (episodes, tensors)
        log_grad = np.log(np.maximum(np.stack([r["grad_norms"] for r in first]), 1e-30))
        loss_std = np.repeat([[r["losses"].std()] for r in first], log_scale.shape[1], axis=1)
        ratio = np.repeat([[r["ratio"]] for r in first], log_scale.shape[1], axis=1)
        centered = log_scale - log_scale.mean(axis=0, keepdims=True)  # within each tensor
        out["arbiter_step1_spearman"] = {
            "log_scale_vs_log_grad_norm": spearman(centered, log_grad
                                                   - log_grad.mean(0, keepdims=True)),
            "log_scale_vs_loss_std": spearman(centered, loss_std),
            "log_scale_vs_grad_ratio": spearman(centered, ratio),
            "note": "across episodes, within each tensor (per-tensor means removed)"}
    return out


def plot(results: list[dict], traces: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for res in results:
        name = res["name"]
        first = [t[0] for t in traces[name]]
        losses = np.concatenate([r["losses"] for r in first])
        axes[0].hist(np.log10(np.maximum(losses, 1e-12)), bins=40, alpha=0.5, label=name)
        steps = [s["step"] for s in res["steps"]]
        axes[1].plot(steps, [s["ratio_mean_grad_to_sample_grads"] for s in res["steps"]], "o-",
                     label=name)
        axes[2].plot(steps, [s["loss_max_over_mean"] for s in res["steps"]], "o-", label=name)
        if algorithm(res["algorithm"]).scale_network is not None:
            scales = np.stack([r["scales"] for r in first])
            grads = np.stack([r["grad_norms"] for r in first])
            axes[3].scatter(np.log10(np.maximum(grads, 1e-30)).ravel(), scales.ravel(), s=4,
                            alpha=0.4, label=name)
    axes[0].set(title="per-sample support loss before step 1", xlabel="log10 loss",
                ylabel="samples")
    axes[1].set(title="|mean gradient| / mean |per-sample gradient|", xlabel="inner step",
                ylim=(0, 1.05))
    axes[2].set(title="max / mean per-sample support loss", xlabel="inner step")
    axes[3].set(title="Arbiter scale vs gradient norm (step 1)", xlabel="log10 |g| per tensor",
                ylabel="scale", yscale="log")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def plot_alpha(results: list[dict], path: Path, title: str) -> None:
    """Per model: the scales per tensor and step (top: the Arbiter's alpha, LSLR's learned
    factors; interquartile band), and the norm of each tensor's step (bottom, every model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(max(4.2 * len(results), 6.5), 7),
                             squeeze=False,
                             sharex=True)
    for col, res in enumerate(results):
        steps = [s["step"] for s in res["steps"]]
        top, bottom = axes[0, col], axes[1, col]
        network = algorithm(res["algorithm"]).scale_network  # arbiter, step_sizes or None
        arbiter = network is not None
        for t, tensor in enumerate(res["tensors"]):
            norms = [s["step_norm_mean_per_tensor"][t] for s in res["steps"]]
            line, = bottom.plot(steps, norms, "o-", ms=3, label=tensor)
            if arbiter:
                mean = [s["scale_mean_per_tensor"][t] for s in res["steps"]]
                low = [s["scale_quartiles_per_tensor"][0][t] for s in res["steps"]]
                high = [s["scale_quartiles_per_tensor"][1][t] for s in res["steps"]]
                top.plot(steps, mean, "o-", ms=3, color=line.get_color(), label=tensor)
                top.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
        form = f", {res['arbiter_form']} form" if network == "arbiter" else ""
        top.set_title(f"{res['name']} ({res['algorithm']}{form}, lr {res['inner_lr']:g})",
                      fontsize=9)
        if arbiter:
            what = ("alpha: the step's norm / beta"
                    if network == "arbiter" and res["arbiter_form"] == "joint"
                    else "scale: a factor on |g|")
            top.set(ylabel=what)
            top.legend(fontsize=6)
        else:
            top.text(0.5, 0.5, "no scales (plain SGD)", ha="center", va="center",
                     transform=top.transAxes)
            top.set_yticks([])
        top.set(yscale="log") if arbiter else None
        bottom.set(yscale="log", xlabel="inner step", ylabel="|step| per tensor")
        bottom.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def with_earlier(earlier: dict, report: dict, path: Path) -> list[dict]:
    """``report``'s models, after those of ``earlier`` (a record of the same episodes) that it
    does not analyse again; a model analysed again takes its earlier place."""
    for key in ("protocol", "ways", "shots", "episodes", "episodes_sha256"):
        if key in earlier and earlier[key] != report[key]:
            raise SystemExit(f"--keep-earlier: {path} has {key} {earlier[key]!r}, these "
                             f"episodes {report[key]!r}: not the same episodes")
    new = {m["name"]: m for m in report["models"]}
    merged = [new.pop(m["name"], m) for m in earlier["models"]]
    return merged + list(new.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdirs", nargs="+", required=True)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--shots", type=int, help="default: the first model's")
    p.add_argument("--ways", type=int)
    p.add_argument("--inner-steps", type=int, help="default: each model's inner_steps_test")
    p.add_argument("--protocol", choices=("standard", "cross_alphabet"))
    p.add_argument("--data-dir")
    p.add_argument("--plot", type=Path)
    p.add_argument("--alpha-plot", type=Path,
                   help="the Arbiter's alpha and the step norms per tensor and step")
    p.add_argument("--json", type=Path)
    p.add_argument("--keep-earlier", action="store_true",
                   help="keep the models of an existing --json (same episodes) that are not "
                        "analysed now, e.g. whose run folders are gone; plot them all")
    args = p.parse_args()
    if args.keep_earlier and args.json is None:
        p.error("--keep-earlier extends the --json record: give --json")
    from metagna_tf.comparison import fingerprint, short_names

    models = [load_trained(w)[0] for w in args.workdirs]
    first = models[0].config
    protocol = args.protocol or first.protocol
    settings = EvaluationSettings(episodes=args.episodes, protocol=protocol, ways=args.ways,
                                  shots=args.shots)
    chosen = evaluation_episodes(first, settings, data_dir=args.data_dir)
    spec, batches = chosen.spec, chosen.batches
    episodes = [(sx, sy) for bx, by, _, _ in batches for sx, sy in zip(bx, by, strict=True)]
    results, traces = [], {}
    for name, model in zip(short_names(args.workdirs), models, strict=True):
        steps = args.inner_steps or model.config.inner_steps_test
        traces[name] = [trace_episode(model, sx, sy, steps) for sx, sy in episodes]
        results.append({"name": name, **summarize(model, traces[name], steps)})
    report = {"protocol": protocol, "ways": spec.ways, "shots": spec.shots,
              "episodes": len(episodes), "episodes_sha256": fingerprint(batches),
              "models": results}
    if args.keep_earlier and args.json.is_file():
        report["models"] = results = with_earlier(json.loads(args.json.read_text()), report,
                                                  args.json)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    title = (f"Omniglot {protocol}, {spec.ways}-way {spec.shots}-shot, {len(episodes)} test "
             "episodes")
    if args.plot:
        plot(results, traces, args.plot, title)
    if args.alpha_plot:
        plot_alpha(results, args.alpha_plot, title)


if __name__ == "__main__":
    main()
