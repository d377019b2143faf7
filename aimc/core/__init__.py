"""The torch-free chip: config tree, random streams, mapping, periphery, tiles, calibration, drift, chip images.

Imports numpy, numba, h5py, scipy and ``device_models`` only (see README.md in this folder).
"""
