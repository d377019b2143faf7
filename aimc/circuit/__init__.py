"""Resistive networks and the crossbar array as a circuit (exact and fast solvers, ngspice netlists); no torch."""
