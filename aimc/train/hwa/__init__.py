"""Hardware-aware training (HWA) for analog inference (training.md §1; Rasch et al., Nat. Commun. 14, 5282, 2023).

The three verbs::

    from aimc.train import hwa
    model = hwa.prepare(model, "standard-hwa")        # analog layers + HWA state (one line)
    opt = torch.optim.Adam(model.parameters(), 1e-2)   # any torch optimizer / LR schedule (*)
    hwa.hook_optimizer(opt, model)                     # or call hwa.post_step(model) after opt.step()
    ... your own training loop ...
    hwa.save_checkpoint(model, "net.pt")               # loadable by aimc.zoo and by hwa.load_checkpoint
    res = hwa.evaluate_over_time(model, dataset)       # calibrated PCM chips over time, global drift compensation

(*) channel-wise remapping keeps max |w| = 1 per column, so Adam's step is relative to 1: use a learning rate
about 3-10x the floating-point one (fine-tuning a trained FP model: ~3e-3; from scratch: ~1e-2).

What happens where (training.md §1.1):

* **Forward** (training and evaluation alike): the full noisy crossbar pipeline of the layer's tiles
  (``TileConfig.forward``: DAC, ADC, output noise, PCM read noise, IR drop, ...). Every stage passes its
  gradient straight through: the backward is the ideal transposed product with the weights the forward used
  (``TileConfig.backward_ideal``; with ``False`` the analog transposed read is used for the input gradient).
* **Weight modifiers** (``WeightModifier``; §1.2) perturb the weights that forward *and* backward see.
  A fresh sample is drawn whenever the weights changed (i.e. once per optimizer step = per mini-batch, as
  aihwkit's post-update resampling; every call within a batch, e.g. RNN time steps, sees the same sample;
  ``HWALayer.resample()`` forces a new one); off in ``eval()`` unless ``enable_during_test``. The gradient
  goes straight through to the clean weights.
* **Input ranges** (``InputRange``; §1.4): one learnable clip r per tile input split; x <- clip(x, -r, r)/r
  before the tile, the tile output is multiplied back by r; custom gradient for r (see ``_HWAMatmul``).
* **Output scales**: a digital per-output-column factor s (learned if ``learn_out_scaling``); y <- s * y.
  Remapping (``WeightRemap``) moves the column magnitude into s, so the product s * W is unchanged.
* **After each optimizer step** (``post_step``): weight clipping (``WeightClip``), then remapping, then
  the input ranges are kept positive.

amax, once for all modifiers: amax = max |W| over the layer's whole (out, in) matrix as stored in the
layer (after remapping: the *normalised* weights, so with channel-wise remapping to 1.0, amax = 1) if
``rel_to_actual_wmax`` (the default; 1 for an all-zero matrix), else ``assumed_wmax``. The noise σ of every
modifier is a fraction of amax.

``torch.compile``: the analog product (``AnalogModule.analog_matmul``, which runs this module's forward)
is excluded from compilation with ``torch.compiler.disable``: a compiled model compiles its digital parts and
breaks the graph around each analog layer, which runs eagerly with the same gradients. So compiling gives
no speed-up for the analog layers themselves; ``fullgraph=True`` cannot work with analog layers.

Modules by concern: ``config`` (HWAConfig, presets; no torch), ``modifiers`` (weight noise; no torch),
``layer`` (the HWA product, clipping, remapping, ``prepare``), ``workflow`` (checkpoints, deployment over
time, training loop, CLI), ``bench`` (``aimc bench hwa-step``). Everything is importable from here.
"""
from __future__ import annotations

from .config import (HWAConfig, PRESETS, ClipType, InputRange, ModifierType, RemapType, WeightClip, WeightModifier,
                     WeightRemap, ideal, preset, standard_hwa)
from .modifiers import _default_coeffs, modify_weights  # noqa: F401  (_default_coeffs: tests)
from .layer import (HWALayer, analog_layers, attach, clip_and_remap_, clip_weights_, effective_weight, hook_optimizer,
                    post_step, prepare, remap_)
from .workflow import (deploy_config, deploy_copy, evaluate_over_time, export_digital, input_ranges, load_checkpoint,
                       run_cli, save_checkpoint, train)
from .bench import bench_hwa_step

__all__ = [
    "ModifierType", "ClipType", "RemapType", "WeightModifier", "WeightClip", "WeightRemap", "InputRange",
    "HWAConfig", "HWALayer", "PRESETS", "preset", "prepare", "attach", "post_step", "hook_optimizer",
    "analog_layers", "modify_weights", "effective_weight", "input_ranges", "deploy_config", "deploy_copy",
    "evaluate_over_time", "train", "export_digital", "save_checkpoint", "load_checkpoint",
    "run_cli", "bench_hwa_step", "standard_hwa", "ideal", "clip_weights_", "remap_", "clip_and_remap_",
]
