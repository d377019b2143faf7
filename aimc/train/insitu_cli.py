"""``aimc train --method insitu``: the command-line workflow of in-situ training.

It lives above both ``aimc.insitu`` (configs and pulsed tiles) and ``aimc.optim`` (the optimizer that
sends pulses), so the import arrows point one way: optim -> insitu, train.insitu_cli -> both.
"""
from __future__ import annotations


def run_cli(args) -> int:
    """``aimc train --method insitu``: in-situ training of a zoo model on built-in data.

    Options (``--opt key=value``): ``algorithm`` (default ttv2; any of ``ALGORITHMS``), ``device`` (a pulsed
    card, default reram-sb), ``hidden`` (MLP, default 256,128), ``batch_size`` (10). Every weight matrix is
    trained in memory by ``aimc.optim.AnalogSGD`` (lr default 0.1, biases digital). The learned effective
    weights are written as an ordinary (digital) zoo checkpoint, ready for the inference flow
    (convert -> program -> drift).
    """
    import json
    import time
    from pathlib import Path

    import torch

    from ..workloads import datasets, zoo
    from ..deployment.convert import convert_to_analog
    from .insitu import canonical_algorithm, insitu
    from .optim import AnalogSGD
    from .cli import method_options
    opts = method_options(args, {"algorithm": "ttv2", "device": "reram-sb", "hidden": "256,128", "batch_size": 10})
    alg = canonical_algorithm(opts["algorithm"])
    cfg = insitu(alg, device=str(opts["device"]))
    cfg.device_model()                                   # fail early on an unknown or non-pulsed card
    bs = int(opts["batch_size"])
    if bs < 1:
        raise ValueError(f"--opt batch_size must be >= 1, got {bs}")
    ds = datasets.load(args.data)
    lr = 0.1 if args.lr is None else args.lr
    torch.manual_seed(args.seed)
    if args.arch == "mlp":
        net = zoo.mlp(ds.n_features, tuple(int(h) for h in str(opts["hidden"]).split(",") if h), ds.n_classes)
    else:
        net = zoo.cnn(tuple(ds.shape), n_classes=ds.n_classes)
    model = convert_to_analog(net, cfg, seed=args.seed)
    opt = AnalogSGD(model, lr=lr)
    shape = (-1, *ds.shape) if args.arch == "cnn" else (-1, ds.n_features)
    x_tr = torch.from_numpy(ds.x_train).reshape(shape)
    y_tr = torch.from_numpy(ds.y_train).long()
    x_te = torch.from_numpy(ds.x_test).reshape(shape)
    y_te = torch.from_numpy(ds.y_test).long()
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(x_tr), bs):
            idx = perm[i:i + bs]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        if not args.quiet and not args.json:
            print(f"insitu {alg} on {opts['device']}: epoch {ep + 1}/{args.epochs}  test accuracy "
                  f"{zoo.evaluate(model, x_te, y_te):.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    acc = zoo.evaluate(model, x_te, y_te)
    net.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")})
    counters = opt.summary()
    out = Path(args.out or Path("aimc-results") / f"train-insitu-{args.data}-{args.arch}.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"method": "insitu", "algorithm": alg, "device": str(opts["device"]), "dataset": args.data,
            "accuracy": acc, "seed": args.seed, "epochs": args.epochs, "lr": lr, "batch_size": bs,
            "pulses": counters["pulses"], "transfers": counters["transfers"],
            "train_s": round(time.perf_counter() - t0, 1)}
    zoo.save_checkpoint(net, out, meta, overwrite=args.overwrite or args.out is None)
    res = {"method": "insitu", "algorithm": alg, "device": str(opts["device"]), "data": args.data, "arch": args.arch,
           "test_accuracy": acc, "pulses": counters["pulses"], "transfers": counters["transfers"],
           "checkpoint": str(out)}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"insitu {alg} on {opts['device']}  {args.data}/{args.arch}  test accuracy {acc:.4f} (noisy analog "
              f"forward), {counters['pulses']} pulses, {counters['transfers']} transfers  -> {out}")
    return 0
