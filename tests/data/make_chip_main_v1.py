"""Writes chip_main_v1.h5 + chip_main_v1.npz: a chip image written by aimc *before calibration existed*.

Run with the code of that time on the path (done once, with /work/main at commit 4267b56):
    cd /tmp && PYTHONPATH=/path/to/old/aimc python /path/to/tests/data/make_chip_main_v1.py OUTDIR
A 20-12-5 MLP converted with that day's ``aimc.deploy.deploy_config()`` (PCM, global compensation, abs-max
noise management, ADC bound 10), programmed, drifted to 1 h and saved; the npz holds the digital weights, an
input batch and the outputs the reloaded chip must reproduce (eval mode, from the saved stream state).
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import aimc
from aimc.convert import convert_to_analog, drift, program
from aimc.deploy import deploy_config

out = Path(sys.argv[1])
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 5))
chip = convert_to_analog(net, deploy_config(), seed=3)
chip.eval()
program(chip)
drift(chip, 3600.0)
aimc.save_chip(chip, out / "chip_main_v1.h5")
x = torch.rand(16, 20, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    y = chip(x)
np.savez(out / "chip_main_v1.npz", x=x.numpy(), y=y.numpy(),
         **{k.replace(".", "_"): v.numpy() for k, v in net.state_dict().items()})
print("aimc from", aimc.__file__)
