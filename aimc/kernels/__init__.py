"""Every Numba-compiled function of aimc lives in this folder, one module per topic.

``rng`` counter-based random numbers; ``periphery`` fused DAC/ADC/noise passes of the analog MVM;
``drift`` fused programming/drift/read noise of power-law devices; ``pulsed`` pulse-train updates;
``nodal`` nodal analysis of resistive networks with diodes (float64); ``cost`` the input sums of the
cost counters (``aimc.cost``).
Kernels trust their inputs: validation happens at the public entry points.
"""
