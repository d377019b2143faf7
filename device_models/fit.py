"""Fit pulse-response device models to a measured up-then-down pulse experiment (numpy + scipy).

Input: two traces of consecutive reads, ``up`` (after each of N up pulses) and ``down`` (after each of M
down pulses), in the normalised weight units of the model (e.g. ``shared/data/gong2018_reram_pulse_response.csv``,
Gong et al., Nat. Commun. 9, 2102 (2018), as distributed with IBM/aihwkit). Row k of a trace is read after
k + 1 pulses from a start w0 that is fitted (or taken from the smoothed trace).

Three fits, all by functions here (``python -m device_models.fit [file.csv] [--card]`` prints them):

* :func:`fit_lookup_table` -> a ``pulsed-lookup-table`` device on n equally spaced nodes between the lowest
  and highest level the smoothed traces reach (smooth = 51-read centred moving average, then isotonic
  regression by pool-adjacent-violators, up increasing, down decreasing, linear between block centres).
  Start: the mean step at node w_k is the window width over the pulses the smooth spends in it,
  h/|p(w_k + h/2) − p(w_k − h/2)| (nodes the trace never visits take the nearest measured value). Then each
  table is refined by penalised least squares of its deterministic trace against the raw reads, over
  (log step per node, w0), penalty ``penalty``·(second difference of log step) — linear interpolation of
  steps does not preserve pulse counts where steps change fast, and the single trace's random-walk jumps
  should not become device physics. dw_min = the step at the symmetry point (the stable crossing of the up
  and down tables nearest the middle of the range); the tables hold step/dw_min.
* :func:`noise_moments`: the residuals around a quartic trend in p are split into a random walk (accumulating
  c2c step noise, σ_step per pulse) and white noise (σ_white per read) by the variogram
  γ(k) = var(r_{t+k} − r_t) ≈ 2σ_white² + k·σ_step², fitted over lags 5..60 (short lags are excluded: the
  measured noise is correlated over a few pulses, which a white + random-walk model cannot hold), and
  σ_white² = (γ(1) − σ_step²)/2 so the scatter of consecutive reads is kept. The model takes σ_step as
  additive c2c noise (``mult_noise`` false, dw_min_std = σ_step/dw_min) and σ_white as write noise
  (write_noise_std = σ_white/dw_min): one trace cannot tell write noise from read noise.
* :func:`fit_soft_bounds`, :func:`fit_exp_step`: least squares (scipy ``least_squares``) of the
  deterministic model traces against the raw data, both traces at once, with the starts w0 free.

Measured on shared/data/gong2018_reram_pulse_response.csv with ``python -m device_models.fit`` (rms over the
2000 reads of the deterministic nominal model, starts fitted; "smooth" = against the moving-average +
isotonic curve, i.e. without most of the measurement noise, whose own rms is 0.153; data range 2.77):

=========================  ===============  ===================================================================
model                      rms raw / smooth fitted parameters
=========================  ===============  ===================================================================
pulsed-lookup-table (16)   0.168 / 0.048    dw_min 1.547e-3 at w* = −0.450, bounds [−1.141, 1.044]; noise:
                                            data σ_step 0.0224/pulse, σ_white 0.116/read (diff std 0.166,
                                            lag-1 corr −0.435) -> model dw_min_std 16.9 (additive, σ_step
                                            0.0262 after simulated moments), write_noise_std 74.9
soft-bounds                0.175 / 0.066    dw_min 2.469e-3, up_down −0.183, w_max 38.5 (the up trace is
                                            almost linear), w_min −1.106
exp-step (a = b = −0.5)    0.173 / 0.059    dw_min 1.304e-3, up_down 0.592, A_up 0.364, A_down −0.489,
                                            γ_up 6.20, γ_down 4.17, w_max 1.068, w_min −1.211
reram-es card (aihwkit)    0.194 / 0.107    for comparison: no fitting, starts = first smoothed reads
reram-sb card (aihwkit)    0.303 / 0.256    for comparison
=========================  ===============  ===================================================================

The ``reram-gong2018-measured`` card holds the lookup-table numbers (``python -m device_models.fit --card``).
A card (or ``from_params``) may instead give ``csv`` (+ ``n_nodes``): :func:`prepare_lookup_table`, registered
with ``device_models.cards.register_preparer``, fits it when the card is loaded (imports point one way: this
module uses ``pulsed``, never the reverse).
The exp-step least squares has several local minima (a, b fixed, start as written in :func:`fit_exp_step`).
(tests/test_device_pulsed.py re-fits from the file when it exists and checks the card and error bounds.)
"""
from __future__ import annotations

import io
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validate import check_range
from .cards import FAMILIES, read_regular_text, register_preparer
from .pulsed import F32, stack_devices

DATA_NAME = "gong2018_reram_pulse_response.csv"


def default_data_path(name: str = DATA_NAME) -> Path | None:
    """The shared measured-data file if present: ``<repo>/shared/data/`` or ``<repo>/../shared/data/``."""
    root = Path(__file__).resolve().parents[1]
    for base in (root / "shared" / "data", root.parent / "shared" / "data"):
        p = base / name
        if p.exists():
            return p
    return None


MAX_CSV_BYTES = 4 * 2**20  # ~100 000 rows; a fit simulates every pulse, so larger experiments are refused


def load_pulse_response(path) -> tuple[np.ndarray, np.ndarray]:
    """(up, down) float64 traces from a two-column CSV (no header): column 1 up responses, column 2 down.

    Only a regular file is read (a FIFO, directory or device is refused, never blocks), at most 4 MiB."""
    text = read_regular_text(path, "pulse-response CSV", MAX_CSV_BYTES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on an empty file; the shape check below names it
            d = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: not a two-column numeric CSV ({e})") from None
    if d.ndim != 2 or d.shape[1] != 2 or d.shape[0] < 10:
        raise ValueError(f"{path}: expected two columns (up, down) of at least 10 rows, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{path}: contains NaN or inf")
    return d[:, 0].copy(), d[:, 1].copy()


def isotonic(y, increasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: (block values strictly monotone, block sizes) of the L2 isotonic fit."""
    y = np.asarray(y, dtype=np.float64)
    if not increasing:
        v, n = isotonic(-y, True)
        return -v, n
    vals: list[float] = []
    cnts: list[int] = []
    for v in y:
        vals.append(float(v))
        cnts.append(1)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            v2, c2 = vals.pop(), cnts.pop()
            vals[-1] = (vals[-1] * cnts[-1] + v2 * c2) / (cnts[-1] + c2)
            cnts[-1] += c2
    return np.array(vals), np.array(cnts)


@dataclass(frozen=True)
class Smoothed:
    """A monotone smooth of one trace: block values and the (fractional) pulse index of each block centre."""

    values: np.ndarray
    centers: np.ndarray
    increasing: bool

    def at_pulse(self, k) -> np.ndarray:
        """The smooth curve at pulse indices k (0-based rows), linear between block centres."""
        return np.interp(k, self.centers, self.values)

    def pulse_at(self, w) -> np.ndarray:
        """The fractional pulse index at which the smooth curve passes w (clamped to the covered range)."""
        if self.increasing:
            return np.interp(w, self.values, self.centers)
        return np.interp(w, self.values[::-1], self.centers[::-1])

    @property
    def lo(self) -> float:
        return float(self.values.min())

    @property
    def hi(self) -> float:
        return float(self.values.max())


def moving_average(x, window: int) -> np.ndarray:
    """Centred moving average of ``window`` reads (truncated at the ends: fewer reads there)."""
    x = np.asarray(x, dtype=np.float64)
    k = np.ones(int(window))
    return np.convolve(x, k, mode="same") / np.convolve(np.ones_like(x), k, mode="same")


def smooth(trace, increasing: bool, window: int = 51) -> Smoothed:
    """Monotone smooth of a trace: centred moving average (``window`` reads, truncated at the ends), then
    isotonic regression; the curve is linear between the isotonic block centres."""
    v, n = isotonic(moving_average(trace, window) if window > 1 else trace, increasing)
    ends = np.cumsum(n)
    centers = ends - n / 2.0 - 0.5
    return Smoothed(v, centers, increasing)


def _step_table(sm: Smoothed, nodes: np.ndarray) -> np.ndarray:
    h = nodes[1] - nodes[0]
    lo = np.maximum(nodes - h / 2, sm.lo)
    hi = np.minimum(nodes + h / 2, sm.hi)
    width = hi - lo
    dp = np.abs(sm.pulse_at(hi) - sm.pulse_at(lo))
    ok = (width > h / 4) & (dp > 0)
    step = np.where(ok, width / np.where(dp > 0, dp, 1.0), np.nan)
    if not ok.any():
        raise ValueError("fit_lookup_table: a trace covers less than a quarter of a node spacing")
    idx = np.flatnonzero(ok)
    nearest = idx[np.abs(np.arange(len(nodes))[:, None] - idx[None, :]).argmin(axis=1)]
    return step[nearest]


def _symmetry(nodes, up, down) -> tuple[float, float]:
    """(w*, step at w*): the stable crossing (up > down below it, up < down above) of the up and down step
    tables nearest the middle of the range (any crossing if none is stable; the median step if none)."""
    diff = up - down
    cross = np.flatnonzero(np.sign(diff[:-1]) * np.sign(diff[1:]) <= 0)
    stable = cross[diff[cross] > diff[cross + 1]]  # up > down below, up < down above: alternating pulses settle
    if len(stable):
        cross = stable
    if len(cross) == 0:
        return math.nan, float(np.median(np.concatenate([up, down])))
    mid = 0.5 * (nodes[0] + nodes[-1])
    ws = []
    for i in cross:
        d0, d1 = diff[i], diff[i + 1]
        q = 0.0 if d0 == d1 else d0 / (d0 - d1)
        ws.append(nodes[i] + q * (nodes[i + 1] - nodes[i]))
    ws = np.array(ws)
    w = float(ws[np.abs(ws - mid).argmin()])
    return w, float(np.interp(w, nodes, up))


def noise_moments(*traces, deg: int = 4, lags=(5, 60)) -> dict:
    """Split each trace's residual noise into random walk (σ_step/pulse) and white (σ_white/read); pooled.

    Residuals r around a degree-``deg`` polynomial trend in the pulse index; variogram γ(k) = var(r_{t+k} −
    r_t) averaged over traces, fitted with 2σ_white² + k·σ_step² over k in [lags[0], lags[1]];
    σ_white² = (γ(1) − σ_step²)/2. Also returns ``diff_std`` (the scatter of consecutive reads, pooled) and
    ``lag1_corr`` (autocorrelation of consecutive differences).
    """
    ks = np.arange(lags[0], lags[1] + 1)
    gam = np.zeros(len(ks))
    g1 = 0.0
    corr = 0.0
    for x in traces:
        x = np.asarray(x, dtype=np.float64)
        p = np.arange(len(x)) / len(x)
        r = x - np.polyval(np.polyfit(p, x, deg), p)
        gam += np.array([np.var(r[k:] - r[:-k]) for k in ks])
        dx = np.diff(x)
        g1 += np.var(np.diff(r))
        corr += np.corrcoef(dx[:-1], dx[1:])[0, 1]
    gam /= len(traces)
    g1 /= len(traces)
    A = np.vstack([np.ones_like(ks, dtype=float), ks.astype(float)]).T
    _, s2 = np.linalg.lstsq(A, gam, rcond=None)[0]
    s2 = max(float(s2), 0.0)
    sw2 = max((g1 - s2) / 2.0, 0.0)
    return {"sigma_step": math.sqrt(s2), "sigma_white": math.sqrt(sw2), "diff_std": math.sqrt(g1),
            "lag1_corr": corr / len(traces)}


def _interp_rows(w, nodes, table):
    """np.interp(w[b], nodes, table[b]) for every row b (clamped at the ends), vectorised over rows."""
    n = len(nodes)
    t = np.minimum(np.maximum((w - nodes[0]) * ((n - 1) / (nodes[-1] - nodes[0])), 0.0), n - 1.0)
    i = np.minimum(t.astype(np.int64), n - 2)
    q = t - i
    flat = table.ravel()
    base = np.arange(table.shape[0]) * n + i
    return flat[base] + q * (flat[base + 1] - flat[base])


def _lut_trace(log_steps, w0, nodes, w_min, w_max, n: int, direction: int) -> np.ndarray:
    """(rows, n) deterministic traces of lookup-table devices (absolute steps exp(log_steps)), float64."""
    steps = np.exp(log_steps)
    w = np.clip(np.asarray(w0, dtype=np.float64), w_min, w_max)
    out = np.empty((len(w), n))
    for k in range(n):
        w = np.minimum(np.maximum(w + direction * _interp_rows(w, nodes, steps), w_min), w_max)
        out[:, k] = w
    return out


def _refine_table(trace, sm: Smoothed, nodes, w_min, w_max, step0, direction, penalty, max_nfev):
    """Penalised least squares of one trace over (log step at each node, w0); smoothness penalty on the
    second differences of log step (which also fixes nodes the trace never visits)."""
    from scipy.optimize import least_squares

    n = len(nodes)
    x0 = np.concatenate([np.log(step0), [sm.values[0]]])
    D = np.diff(np.eye(n), 2, axis=0) * penalty

    def residuals(xs):
        xs = np.atleast_2d(xs)
        tr = _lut_trace(xs[:, :n], xs[:, n], nodes, w_min, w_max, len(trace), direction)
        return np.concatenate([tr - trace[None, :], xs[:, :n] @ D.T], axis=1)

    def jac(x):
        h = 1e-4
        xs = np.vstack([x, x + h * np.eye(n + 1)])
        r = residuals(xs)
        return ((r[1:] - r[0]) / h).T

    res = least_squares(lambda x: residuals(x)[0], x0, jac=jac, method="lm", max_nfev=max_nfev)
    return np.exp(res.x[:n]), float(res.x[n])


def fit_lookup_table(up, down, n_nodes: int = 16, *, penalty: float = 1.0, max_nfev: int = 40,
                     calibrate: int = 2) -> dict:
    """Parameters of a ``pulsed-lookup-table`` device fitted to (up, down) traces (see the module docstring).

    Start: the windowed pulse-count estimate on the monotone smooth; then each table (up on the up trace,
    down on the down trace) is refined by penalised least squares of the deterministic trace against the raw
    reads (linear interpolation of steps is not pulse-count preserving where steps change fast, the refit is).
    Noise: :func:`noise_moments`, then ``calibrate`` rounds of simulated moments (σ_step scaled until the
    same estimator on 16 simulated noisy traces, fixed seed, returns the data's value; σ_white then keeps
    the scatter of consecutive reads).
    Returns the card parameters (w_nodes, up, down, dw_min, w_min, w_max, dw_min_std, write_noise_std,
    mult_noise) plus, under ``"info"``, the symmetry point, the fitted starts and the noise moments.
    """
    if n_nodes < 3:
        raise ValueError(f"fit_lookup_table: n_nodes = {n_nodes} must be >= 3")
    up = np.asarray(up, dtype=np.float64)
    down = np.asarray(down, dtype=np.float64)
    su, sd = smooth(up, True), smooth(down, False)
    w_min = min(su.lo, sd.lo)
    w_max = max(su.hi, sd.hi)
    nodes = np.linspace(w_min, w_max, n_nodes)
    step_up, w0u = _refine_table(up, su, nodes, w_min, w_max, _step_table(su, nodes), +1, penalty, max_nfev)
    step_down, w0d = _refine_table(down, sd, nodes, w_min, w_max, _step_table(sd, nodes), -1, penalty, max_nfev)
    wstar, dw_min = _symmetry(nodes, step_up, step_down)
    nm = noise_moments(up, down)
    params = {
        "w_nodes": [float(v) for v in nodes],
        "up": [float(v) for v in step_up / dw_min],
        "down": [float(v) for v in step_down / dw_min],
        "dw_min": float(dw_min),
        "w_min": float(w_min),
        "w_max": float(w_max),
        "dw_min_std": nm["sigma_step"] / dw_min,
        "write_noise_std": nm["sigma_white"] / dw_min,
        "mult_noise": False,
    }
    sigma_step = nm["sigma_step"]
    for _ in range(calibrate):
        # method of simulated moments: the variogram estimator is biased low (the trend fit and the bounds
        # absorb part of the walk), so scale σ_step until the estimator on simulated traces gives the data's
        sim = _simulated_moments(params, w0u, w0d, len(up), len(down))
        if sim["sigma_step"] > 0:
            sigma_step *= nm["sigma_step"] / sim["sigma_step"]
        sigma_white = math.sqrt(max((nm["diff_std"] ** 2 - sigma_step ** 2) / 2.0, 0.0))
        params["dw_min_std"] = sigma_step / dw_min
        params["write_noise_std"] = sigma_white / dw_min
    params["info"] = {"symmetry_point": wstar, "w0_up": w0u, "w0_down": w0d, **nm,
                      "model_sigma_step": params["dw_min_std"] * dw_min,
                      "model_sigma_white": params["write_noise_std"] * dw_min}
    return params


def _simulated_moments(params, w0u, w0d, n_up, n_down, n_dev: int = 16, seed: int = 20180101) -> dict:
    """noise_moments of simulated noisy traces of the lookup device (n_dev nominal devices, fixed seed)."""
    dev = lookup_device(params)
    devs = dev.nominal_devices((n_dev,))
    tu = dev.response_curve(n_up, 0, w0=np.full(n_dev, w0u, dtype=F32), devs=devs, rng=seed)[1:]
    td = dev.response_curve(0, n_down, w0=np.full(n_dev, w0d, dtype=F32), devs=devs, rng=seed + 1)[1:]
    ms = [noise_moments(tu[:, i], td[:, i]) for i in range(n_dev)]
    return {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}


def prepare_lookup_table(params: dict, *, source: str = "params") -> dict:
    """Card preparer of ``pulsed-lookup-table``: ``csv`` (a checked path, see ``cards.register_preparer``) and
    ``n_nodes`` (16) become the fitted ``w_nodes``/``up``/``down``/``dw_min``/bounds/noise of
    :func:`fit_lookup_table`; values given next to ``csv`` win (None = take the fit's). Without a csv
    (absent or ``""``) the tables are the card's and ``n_nodes`` is only checked and dropped (specs saved
    while both were fields of the class carry ``csv = ""``, ``n_nodes = 16``)."""
    p = dict(params)
    csv = p.pop("csv", None)
    n_nodes = p.pop("n_nodes", None)
    owner = f"{source}: pulsed-lookup-table"
    if n_nodes is None:
        n_nodes = 16
    nn = check_range(owner, "n_nodes", n_nodes, 3, 256)
    if isinstance(n_nodes, bool) or nn != int(nn):
        raise ValueError(f"{owner}.n_nodes = {n_nodes!r} must be an integer")
    if csv is None or (isinstance(csv, str) and not csv):
        return p
    if any(k in p for k in ("w_nodes", "up", "down")):
        raise ValueError(f"{owner}: give either csv or w_nodes/up/down, not both")
    try:
        up, down = load_pulse_response(csv)
    except ValueError as e:
        raise ValueError(f"{owner}.csv: {e}") from None
    fitted = fit_lookup_table(up, down, n_nodes=int(nn))
    fitted.pop("info")
    return {**fitted, **{k: v for k, v in p.items() if not (v is None and k in fitted)}}


register_preparer("pulsed-lookup-table", prepare_lookup_table, path_fields=("csv",))


def lookup_device(params: dict, **overrides):
    """The ``pulsed-lookup-table`` device of :func:`fit_lookup_table`'s parameters (d2d as given in overrides)."""
    p = {k: v for k, v in params.items() if k != "info"}
    return FAMILIES["pulsed-lookup-table"](**{**p, **overrides})


# ----------------------------------------------------------------------------------------------------------
# deterministic traces, batched over parameter sets
# ----------------------------------------------------------------------------------------------------------

def simulate(device, devs, w0, n: int, direction: int) -> np.ndarray:
    """Deterministic trace (n, *devs.shape): the weight after each of n pulses of one direction from w0."""
    w = device.clip(np.broadcast_to(np.asarray(w0, dtype=F32), devs.shape), devs)
    d = np.asarray(F32(direction))
    out = np.empty((n,) + devs.shape, dtype=F32)
    for k in range(n):
        w = device._pulse(w, d, devs, None)
        out[k] = w
    return out


@dataclass
class FitResult:
    """A fitted model: card ``params``, fitted starts, and errors against the data."""

    family: str
    params: dict
    w0_up: float
    w0_down: float
    rms: float
    rms_smooth: float
    data_range: float
    extra: dict = field(default_factory=dict)

    @property
    def device(self):
        return FAMILIES[self.family](**self.params)


def evaluate(device, up, down, w0_up: float, w0_down: float) -> dict:
    """rms of the nominal deterministic traces against the raw data and against the isotonic smooth."""
    devs = device.nominal_devices(())
    mu = simulate(device, devs, w0_up, len(up), +1)
    md = simulate(device, devs, w0_down, len(down), -1)
    model = np.concatenate([mu, md]).astype(np.float64)
    data = np.concatenate([up, down])
    su, sd = smooth(up, True), smooth(down, False)
    sm = np.concatenate([su.at_pulse(np.arange(len(up))), sd.at_pulse(np.arange(len(down)))])
    return {"rms": float(np.sqrt(np.mean((model - data) ** 2))),
            "rms_smooth": float(np.sqrt(np.mean((model - sm) ** 2))),
            "rms_noise_floor": float(np.sqrt(np.mean((sm - data) ** 2))),
            "data_range": float(data.max() - data.min()),
            "model_up": mu, "model_down": md}


_COMMON_D2D_OFF = {"dw_min_dtod": 0.0, "up_down_dtod": 0.0, "w_max_dtod": 0.0, "w_min_dtod": 0.0,
                   "dw_min_std": 0.0}


def _batched_residuals(family, make_params, xs, up, down):
    """Residuals (len(xs), N + M) of the deterministic model for each parameter vector in xs."""
    cls = FAMILIES[family]
    devices = [cls(**make_params(x)) for x in xs]
    devs = stack_devices([dv.nominal_devices((1,)) for dv in devices])
    w0u = np.array([x[-2] for x in xs], dtype=F32)
    w0d = np.array([x[-1] for x in xs], dtype=F32)
    mu = simulate(devices[0], devs, w0u, len(up), +1)
    md = simulate(devices[0], devs, w0d, len(down), -1)
    return np.concatenate([mu - up[:, None], md - down[:, None]]).T.astype(np.float64)


def _least_squares(family, make_params, x0, lower, upper, up, down, max_nfev):
    from scipy.optimize import least_squares

    x0 = np.asarray(x0, dtype=np.float64)
    rel = np.array([1e-3] * len(x0))

    def fun(x):
        return _batched_residuals(family, make_params, [x], up, down)[0]

    def jac(x):
        hs = rel * np.maximum(np.abs(x), 1e-2)
        xs = [x] + [x + h * e for h, e in zip(hs, np.eye(len(x)))]
        r = _batched_residuals(family, make_params, xs, up, down)
        return ((r[1:] - r[0]) / hs[:, None]).T

    return least_squares(fun, x0, jac=jac, bounds=(lower, upper), method="trf", x_scale="jac",
                         max_nfev=max_nfev)


def fit_soft_bounds(up, down, *, max_nfev: int = 60) -> FitResult:
    """Least-squares ``soft-bounds`` fit: x = (dw_min, up_down, w_max, w_min, w0_up, w0_down)."""
    up = np.asarray(up, dtype=np.float64)
    down = np.asarray(down, dtype=np.float64)
    su, sd = smooth(up, True), smooth(down, False)
    span = max(su.hi, sd.hi) - min(su.lo, sd.lo)

    def make(x):
        return {"dw_min": float(x[0]), "up_down": float(x[1]), "w_max": float(x[2]), "w_min": float(x[3]),
                **_COMMON_D2D_OFF}

    x0 = [span / len(up), 0.0, 1.5 * su.hi, 1.5 * sd.lo, su.values[0], sd.values[0]]
    lower = [1e-6, -0.95, 0.05, -50.0, -50.0, -50.0]
    upper = [1.0, 0.95, 50.0, -0.05, 50.0, 50.0]
    res = _least_squares("soft-bounds", make, x0, lower, upper, up, down, max_nfev)
    params = make(res.x)
    ev = evaluate(FAMILIES["soft-bounds"](**params), up, down, res.x[4], res.x[5])
    return FitResult("soft-bounds", params, float(res.x[4]), float(res.x[5]), ev["rms"], ev["rms_smooth"],
                     ev["data_range"], {"nfev": res.nfev, "rms_noise_floor": ev["rms_noise_floor"]})


def fit_exp_step(up, down, *, a: float = -0.5, b: float = -0.5, max_nfev: int = 60) -> FitResult:
    """Least-squares ``exp-step`` fit with a, b fixed (as in aihwkit's ReRamES preset):
    x = (dw_min, up_down, A_up, A_down, γ_up, γ_down, w_max, w_min, w0_up, w0_down)."""
    up = np.asarray(up, dtype=np.float64)
    down = np.asarray(down, dtype=np.float64)
    su, sd = smooth(up, True), smooth(down, False)
    span = max(su.hi, sd.hi) - min(su.lo, sd.lo)

    def make(x):
        return {"dw_min": float(x[0]), "up_down": float(x[1]), "A_up": float(x[2]), "A_down": float(x[3]),
                "gamma_up": float(x[4]), "gamma_down": float(x[5]), "w_max": float(x[6]), "w_min": float(x[7]),
                "a": a, "b": b, **_COMMON_D2D_OFF}

    x0 = [0.5 * span / len(up), 0.0, -1.0, -0.1, 5.0, 5.0, max(su.hi, sd.hi), min(su.lo, sd.lo),
          su.values[0], sd.values[0]]
    lower = [1e-6, -0.95, -50.0, -50.0, 0.0, 0.0, 0.0, -50.0, -50.0, -50.0]
    upper = [1.0, 0.95, 0.99, 0.99, 30.0, 30.0, 50.0, 0.0, 50.0, 50.0]
    res = _least_squares("exp-step", make, x0, lower, upper, up, down, max_nfev)
    params = make(res.x)
    ev = evaluate(FAMILIES["exp-step"](**params), up, down, res.x[8], res.x[9])
    return FitResult("exp-step", params, float(res.x[8]), float(res.x[9]), ev["rms"], ev["rms_smooth"],
                     ev["data_range"], {"nfev": res.nfev, "rms_noise_floor": ev["rms_noise_floor"]})


# ----------------------------------------------------------------------------------------------------------
# the measured card
# ----------------------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v + '"'
    return repr(float(f"{float(v):.6g}"))


def measured_card(path=None, n_nodes: int = 16) -> str:
    """The TOML text of the ``reram-gong2018-measured`` card, fitted from ``path`` (default: the shared file)."""
    path = Path(path) if path is not None else default_data_path()
    if path is None:
        raise FileNotFoundError(f"{DATA_NAME} not found under shared/data")
    up, down = load_pulse_response(path)
    p = fit_lookup_table(up, down, n_nodes=n_nodes)
    info = p.pop("info")
    lines = [
        'name = "reram-gong2018-measured"',
        'kind = "pulsed"',
        'family = "pulsed-lookup-table"',
        'citation = "Gong et al., Signal and noise extraction from analog memory elements for neuromorphic '
        'computing, Nat. Commun. 9, 2102 (2018)"',
        f'provenance = "fitted by device_models.fit.fit_lookup_table(n_nodes={n_nodes}) to {DATA_NAME} '
        '(shared/data; as distributed in IBM/aihwkit examples/csv/gong_et_al.csv, MIT); regenerate with '
        '`python -m device_models.fit --card`"',
        f'notes = "one measured device: no device-to-device data, so the *_dtod spreads are 0 here (set them '
        f'as overrides). Symmetry point w* = {info["symmetry_point"]:.4g}; c2c random walk sigma_step = '
        f'{info["sigma_step"]:.4g}/pulse (additive), white sigma = {info["sigma_white"]:.4g}/read (as write '
        'noise)."',
        "",
        "[params]",
    ]
    for k in ("dw_min", "w_min", "w_max", "dw_min_std", "write_noise_std", "mult_noise"):
        lines.append(f"{k} = {_fmt(p[k])}")
    for k in ("dw_min_dtod", "up_down_dtod", "w_max_dtod", "w_min_dtod"):
        lines.append(f"{k} = 0.0")
    for k in ("w_nodes", "up", "down"):
        lines.append(f"{k} = {_fmt(p[k])}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m device_models.fit", description=__doc__.split("\n")[0])
    ap.add_argument("csv", nargs="?", help=f"two-column up/down CSV (default: shared/data/{DATA_NAME})")
    ap.add_argument("--n-nodes", type=int, default=16)
    ap.add_argument("--card", action="store_true", help="print the reram-gong2018-measured card and exit")
    args = ap.parse_args(argv)
    path = args.csv or default_data_path()
    if path is None:
        print(f"no CSV given and {DATA_NAME} not found under shared/data", file=sys.stderr)
        return 2
    try:
        if args.card:
            print(measured_card(path, args.n_nodes), end="")
            return 0
        up, down = load_pulse_response(path)
    except ValueError as e:
        print(f"python -m device_models.fit: {e}", file=sys.stderr)
        return 2
    p = fit_lookup_table(up, down, n_nodes=args.n_nodes)
    info = p["info"]
    dev = lookup_device(p)
    ev = evaluate(dev, up, down, info["w0_up"], info["w0_down"])
    print(f"data: {path} ({len(up)} up, {len(down)} down reads), range {ev['data_range']:.3f}, "
          f"noise floor (rms data - isotonic smooth) {ev['rms_noise_floor']:.4f}")
    print(f"lookup-table ({args.n_nodes} nodes): rms {ev['rms']:.4f} raw, {ev['rms_smooth']:.4f} smooth; "
          f"dw_min {p['dw_min']:.5g} at w* {info['symmetry_point']:.4g}; bounds [{p['w_min']:.4g}, "
          f"{p['w_max']:.4g}]")
    print(f"  data noise: sigma_step {info['sigma_step']:.4g}/pulse, sigma_white {info['sigma_white']:.4g}/read, "
          f"diff std {info['diff_std']:.4g}, lag-1 corr {info['lag1_corr']:.3f}")
    print(f"  model noise (after simulated moments): sigma_step {info['model_sigma_step']:.4g} "
          f"(dw_min_std {p['dw_min_std']:.4g}, additive), sigma_white {info['model_sigma_white']:.4g} "
          f"(write_noise_std {p['write_noise_std']:.4g})")
    for fitter in (fit_soft_bounds, fit_exp_step):
        r = fitter(up, down)
        shown = {k: round(v, 6) for k, v in r.params.items() if k not in _COMMON_D2D_OFF}
        print(f"{r.family}: rms {r.rms:.4f} raw, {r.rms_smooth:.4f} smooth (nfev {r.extra['nfev']}); "
              f"w0 up {r.w0_up:.4g}, w0 down {r.w0_down:.4g}; params {shown}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
