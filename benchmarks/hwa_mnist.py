"""HWA vs plain floating-point training, deployed on PCM chips over time (training.md §1.8, R11 proxy).

MNIST-5k (the fixed 4000/1000 split of ``aimc.datasets``), the zoo CNN (conv 5x5 1->8, pool, conv 5x5 8->16,
pool, fc 784->64->10; ``--arch mlp``: the zoo MLP 784-256-128-10). All models are
deployed on the same analog hardware: the periphery of the standard HWA preset (Rasch et al. 2023: 8-bit
DAC/ADC, ADC bound 10, out_noise 0.04, PCM_READ w_noise 0.0175, IR drop 1.0, no bound management,
columnwise weight scaling, tiles of <= 512 inputs), PCM devices (card ``pcm-joshi2020``: programming noise,
drift, 1/f read noise) and global drift compensation; N chip instances (seeds 0..N-1), accuracy after
1 s, 1 d, 1 y, 10 y.

* (a) FP: ``aimc.zoo.train_digital`` (Adam), then ``aimc.deploy.evaluate_over_time`` with dynamic
  (abs-max) input scaling, since a digitally trained model has no learned input ranges.
* (a') FP control: the same, trained for as many epochs in total as the HWA models (FP + HWA epochs).
* (b) HWA: the FP model fine-tuned with ``aimc.train.hwa.prepare(model, "standard-hwa")`` (learned input
  ranges, per-column output scales, clip/remap after every step), then ``hwa.evaluate_over_time`` on the
  same hardware (constant NM, the learned ranges).
* (c) HWA + PCM_NOISE: as (b) with the PCM_NOISE weight modifier (programming noise, drift variation at
  1 d and read noise sampled in every training batch).

Writes ``<out>/results.json``, ``<out>/table.md`` and ``<out>/accuracy.png``; prints the table.

    python benchmarks/hwa_mnist.py                # full run (~15 min on 2 shared cores)
    python benchmarks/hwa_mnist.py --quick        # smoke run (1 epoch, 2 chips)
"""
from __future__ import annotations

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from aimc import datasets, zoo  # noqa: E402
from aimc.config import InferenceConfig, NoiseManagement  # noqa: E402
from aimc.deploy import evaluate_over_time  # noqa: E402
from aimc.train import hwa  # noqa: E402

TIMES = ("1s", "1d", "1y", "10y")


NOISE_SCALE = 1.0


def hardware(nm_abs_max: bool):
    """The deployment TileConfig shared by all variants (NM abs-max for the FP model)."""
    tcfg, _ = hwa.standard_hwa()
    fwd = tcfg.forward
    if nm_abs_max:
        fwd = fwd.replace(noise_management=NoiseManagement.ABS_MAX, nm_thres=0.0)
    params = {} if NOISE_SCALE == 1.0 else {"prog_noise_scale": NOISE_SCALE, "read_noise_scale": NOISE_SCALE}
    inf = InferenceConfig(device="pcm-joshi2020", compensation="global", device_params=params)
    return tcfg.replace(forward=fwd, inference=inf)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chips", type=int, default=10)
    p.add_argument("--arch", choices=["cnn", "mlp"], default="cnn")
    p.add_argument("--fp-epochs", type=int, default=10)
    p.add_argument("--hwa-epochs", type=int, default=10)
    p.add_argument("--fp-lr", type=float, default=1e-3)
    p.add_argument("--hwa-lr", type=float, default=3e-3)
    p.add_argument("--pcm-t", default="1d", help="pcm_t_inference of the PCM_NOISE modifier in (c)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pcm-noise", action="store_true", help="skip variant (c)")
    p.add_argument("--noise-scale", type=float, default=1.0,
                   help="PCM programming and read noise x this factor at deployment (a harsher chip)")
    p.add_argument("--quick", action="store_true", help="1 epoch each, 2 chips (smoke test)")
    p.add_argument("--out", default="aimc-results/hwa_mnist")
    args = p.parse_args(argv)
    if args.quick:
        args.fp_epochs = args.hwa_epochs = 1
        args.chips = 2
    torch.set_num_threads(2)
    global NOISE_SCALE
    NOISE_SCALE = float(args.noise_scale)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = datasets.load("mnist5k")
    log = lambda m: print(m, flush=True)  # noqa: E731
    t_all = time.perf_counter()

    def build():
        torch.manual_seed(args.seed)
        return zoo.cnn() if args.arch == "cnn" else zoo.mlp()

    results = {}
    fp = None
    for key, epochs in (("a_fp", args.fp_epochs), ("a_fp_control", args.fp_epochs + args.hwa_epochs)):
        net = build()
        t0 = time.perf_counter()
        acc = zoo.train_digital(net, ds, epochs=epochs, lr=args.fp_lr, seed=args.seed)
        log(f"({key}) FP training {epochs} epochs: test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)")
        if fp is None:
            fp, fp_acc = net, acc
        t0 = time.perf_counter()
        res = evaluate_over_time(net, ds, hardware(nm_abs_max=True), TIMES, args.chips, seed=args.seed)
        results[key] = res
        log(f"({key}) FP deployed: {[round(100 * m, 2) for m in res.mean]} ({time.perf_counter() - t0:.0f} s)")
    res_a = results["a_fp"]

    from aimc.deploy import parse_time
    variants = [("b_hwa", "standard-hwa", None)]
    if not args.no_pcm_noise:
        mod = hwa.WeightModifier(hwa.ModifierType.PCM_NOISE, pcm_t_inference=parse_time(args.pcm_t))
        variants.append(("c_hwa_pcm_noise", "standard-hwa", mod))
    train_acc = {}
    for key, preset, mod in variants:
        tcfg, hcfg = hwa.preset(preset)
        if mod is not None:
            hcfg = hcfg.replace(modifier=mod)
        model = hwa.prepare(copy.deepcopy(fp), (tcfg, hcfg), seed=args.seed)
        t0 = time.perf_counter()
        acc = hwa.train(model, ds, epochs=args.hwa_epochs, lr=args.hwa_lr, seed=args.seed, log=log)
        train_acc[key] = acc
        log(f"({key}) HWA training: noisy-forward test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)")
        t0 = time.perf_counter()
        res = hwa.evaluate_over_time(model, ds, hardware(nm_abs_max=False), TIMES, args.chips, seed=args.seed)
        results[key] = res
        log(f"({key}) deployed: {[round(100 * m, 2) for m in res.mean]} ({time.perf_counter() - t0:.0f} s)")

    names = {"a_fp": f"(a) FP training ({args.fp_epochs} ep), then conversion",
             "a_fp_control": f"(a') FP training ({args.fp_epochs + args.hwa_epochs} ep), then conversion",
             "b_hwa": "(b) HWA, standard preset",
             "c_hwa_pcm_noise": f"(c) HWA, standard preset + PCM_NOISE modifier (t = {args.pcm_t})"}
    i1y = TIMES.index("1y")
    rows = ["| model | digital | " + " | ".join(TIMES) + " | drop at 1y |", "|---|---|" + "---|" * (len(TIMES) + 1)]
    for key, res in results.items():
        cells = [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(res.mean, res.std)]
        drop = 100 * (res.digital_accuracy - res.mean[i1y])
        rows.append(f"| {names[key]} | {100 * res.digital_accuracy:.2f} | " + " | ".join(cells) + f" | {drop:.2f} |")
    table = "\n".join(rows)
    arch = "CNN (zoo.cnn)" if args.arch == "cnn" else "MLP 784-256-128-10"
    scale = "" if NOISE_SCALE == 1.0 else f" with programming and read noise x{NOISE_SCALE:g}"
    note = (f"\nMNIST-5k test split (1000 images), {arch}, {args.chips} PCM chips{scale} (mean ± std, %), "
            f"global drift compensation. FP: {args.fp_epochs} epochs Adam lr {args.fp_lr}; HWA: + {args.hwa_epochs} "
            f"epochs Adam lr {args.hwa_lr} (cosine) from the FP model (a). 'digital': floating point (FP: the torch model; HWA: perfect forward with its learned input-range "
            f"clipping and output scales); "
            f"'drop at 1y': digital minus 1y accuracy (points).\n")
    print(table + note, flush=True)
    (out / "table.md").write_text(table + "\n" + note)
    payload = {"format": "aimc-hwa-mnist", "version": 1, "args": vars(args), "fp_train_accuracy": fp_acc,
               "hwa_train_accuracy": train_acc, "wall_s": round(time.perf_counter() - t_all, 1),
               "results": {k: {"name": names[k], **v.to_dict()} for k, v in results.items()}}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for key, res in results.items():
            ax.errorbar(res.times, [100 * m for m in res.mean], yerr=[100 * s for s in res.std], marker="o",
                        capsize=4, label=names[key])
        ax.axhline(100 * fp_acc, ls="--", color="gray", label="FP digital")
        ax.set_xscale("log")
        ax.set_xticks(res_a.times)
        ax.set_xticklabels(res_a.time_labels)
        ax.set_xlabel("time after programming")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"MNIST-5k {args.arch.upper()} on PCM ({args.chips} chips, global drift compensation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=120)
        plt.close(fig)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print(f"wrote {out}/results.json, table.md, accuracy.png ({time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
