"""Every Numba-compiled function of aimc lives in this folder, one module per topic.

``rng`` counter-based random numbers; ``periphery`` fused DAC/ADC/noise passes of the analog MVM.
Kernels trust their inputs: validation happens at the public entry points.
"""
