"""The ``mse`` ADC range search through the chip's own converters against the uniform quantiser's MSE (issue 9,
"Converters as circuits"; aimc/core/calibration.py ``transfer_mse_bound``).

Setup: one 16 x 64 tile, weights U(-1, 1), no device noise, no output noise, no bound management, 5-bit ADC of
the kind in each row, static DAC range at the 99.99th percentile; inputs N(0, 1): 512 calibration rows,
2,048 held-out rows. Per row: the range the calibration chooses (through the chip's converters) and the
range the uniform quantiser's MSE would choose on the same analog outputs, and the true error of each, the
mean of (ADC output - analog output)^2 through the chip's converters on the held-out rows.

Run: ``python benchmarks/adc_range_search.py`` (a few seconds).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aimc  # noqa: E402
from aimc.calibration import adc_bound  # noqa: E402
from aimc.config import CalibrationConfig, InferenceConfig, IOConfig, TileConfig  # noqa: E402

CASES = [("ramp, bow INL +4 LSB", dict(adc="ramp", adc_inl_bow=4.0)),
         ("ramp, DNL 0.3 LSB", dict(adc="ramp", adc_dnl_std=0.3)),
         ("SAR, ideal", dict(adc="sar")),
         ("SAR, cap mismatch 0.1", dict(adc="sar", adc_cap_mismatch=0.1)),
         ("uniform, gain 10 % / offset 1 %", dict(adc_gain_std=0.1, adc_offset_std=0.01))]


def main() -> None:
    print("| ADC (5 bits) | granularity | range: converters / uniform MSE | true MSE (held out): converters / uniform |")
    print("|---|---|---|---|")
    for name, kw in CASES:
        for gran in ("tile", "column"):
            io = IOConfig(inp_bits=0, out_bits=5, out_bound=10.0, out_noise=0.0, bound_management="none", **kw)
            cal = CalibrationConfig(out="mse", out_granularity=gran)
            cfg = TileConfig(forward=io, inference=InferenceConfig(device="none", compensation="none"),
                             calibration=cal)
            t = aimc.Tile(16, 64, cfg, seed=0)
            rng = np.random.default_rng(0)
            t.program(rng.uniform(-1, 1, (16, 64)).astype(np.float32))
            xc = rng.standard_normal((512, 64)).astype(np.float32)
            xt = rng.standard_normal((2048, 64)).astype(np.float32)
            t.calibrate(xc)
            b = np.asarray(t.calibration["adc_range"], np.float32)
            yc, yt = (t.analog_reads(x, inp_range=t._cal_inp)[0] for x in (xc, xt))
            bu = adc_bound(yc, cal, io, gran)
            conv = t.adc_transfer()

            def mse(bb):
                return float(((conv(yt, np.broadcast_to(bb, (yt.shape[1],))) - yt).astype(np.float64) ** 2).mean())

            rng_txt = f"{b[0]:.3g} / {bu[0]:.3g}" if gran == "tile" else f"mean {b.mean():.3g} / {bu.mean():.3g}"
            print(f"| {name} | {gran} | {rng_txt} | {mse(b):.4g} / {mse(bu):.4g} |")


if __name__ == "__main__":
    main()
