"""Deploying a trained torch model: conversion to analog layers, programming, drift, calibration, evaluation
over time, and the ``aimc deploy`` command (torch imported by these modules)."""
