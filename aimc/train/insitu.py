"""On-chip (in-situ) training: pulsed device arrays and in-memory update rules (training.md §2, physics.md §5–§6).

One line gives a config that layers and the optimizer understand::

    cfg = aimc.insitu("tiki-taka", device="reram-es")       # an InsituConfig (a TileConfig subclass)
    layer = aimc.nn.AnalogLinear(784, 256, config=cfg)       # forward/backward read through cfg's periphery
    opt = aimc.optim.AnalogSGD(model, lr=0.1)                # step() sends pulses to every analog layer

Algorithms (``ALGORITHMS``; aliases as aihwkit's ``build_config``):

* ``"sgd"`` — analog SGD: W <- W - lr d x^T by stochastic pulse trains (Gokmen & Vlasov 2016).
* ``"tiki-taka"`` (``"tt"``, ``"ttv1"``) — fast array A takes the pulsed SGD update (LR fast_lr, absolute as
  in aihwkit 1.1.0; times lr if ``scale_fast_lr``); every ``transfer_every`` mini-batches
  ``n_reads_per_transfer`` consecutive columns of A are read with one-hot inputs through the noisy
  ``transfer_forward`` periphery (noise and bound management off) and written into the slow array C by a pulsed
  rank-1 update with LR transfer_lr * lr and ``transfer_update`` (BL 31, update and BL management), so one
  transfer moves lr * A e_k on average, up to 31 pulses per device (Gokmen & Haensch 2020). W = gamma A + C.
* ``"ttv2"`` — as TT, but the read column goes into a digital buffer H (pulse units); where |H| >= 1,
  n = trunc(H) pulses (at most ``max_transfer_pulses``) go to C and H <- momentum*H (``forget_buffer``) or
  H - (1 - momentum) n (Gokmen 2021). LR bookkeeping of training.md §2.5: lr_A = fast_lr (times lr if
  ``scale_fast_lr``; with ``auto_scale`` times desired_bl*dw_min/(x_bar d_bar), x_bar and d_bar running
  averages of each sample's max |x| and max |d| as aihwkit's CPU tile: per sample m <- (1 - tau) m + tau max,
  tau = (1 - auto_momentum)/batch, so each sample gets its own LR), H_k +=
  c_k * lr_T * v with lr_T = transfer_lr * lr / (thres_scale * dw_min_A); transfers every
  ``transfer_every`` MVMs (rows of x) unless ``units_in_mbatch``. Transfers due within a mini-batch run after
  its update of A (aihwkit's CPU tile interleaves them with the samples).
* ``"c-ttv2"`` (``"ttv3"``) — TTv2 with random input choppers c_j in {+-1}: A is updated with c * x, the
  read of column k enters H with c_k, and c_k flips with probability ``in_chop_prob`` after each read
  (Rasch et al. 2024). Defaults fast_lr 0.1 and ``auto_scale`` as aihwkit's build_config.
* ``"mixed-precision"`` (``"mp"``) — digital chi += -lr d x^T (exact outer product, BLAS); every
  ``transfer_every`` mini-batches, where |chi| >= eps (``granularity``, 0 = dw_min): n = floor(|chi|/eps)
  pulses of sign(chi) on W and chi -= sign n eps (Nandakumar et al. 2020).

State and composition: a :class:`PulsedArray` holds one crossbar array's per-device parameters (drawn once
from the device card, d2d), its hidden weights w_p, the visible weights the periphery reads (w_p - reference
+ write noise) and per-device pulse counters. An :class:`InsituTile` runs an algorithm on the PulsedArrays of
one ``aimc.Tile`` and mirrors the effective weights into that tile with ``tile.set_weights`` after each
update, so forward and backward go through the tile's periphery (NM, DAC, noise, ADC, BM) unchanged.
An :class:`InsituArray` is the grid of InsituTiles over a ``TileArray`` (each physical tile manages its own
update, as on a chip).

Deployment after training: ``AnalogSGD`` writes the effective weights into ``layer.weight`` after every
step, so ``layer.program()`` (and then ``drift``) writes the learned weights through the inference device
models like any other trained layer. Counters: ``InsituArray.counters()`` / ``AnalogSGD.counters()``.

Pulse trains, coincidences and device steps: ``aimc.kernels.pulsed`` (docstring there; the numpy device models
of ``device_models.pulsed`` are the oracle, held equal in tests/test_pulsed_kernels.py).

Not implemented (yet): AGAD/TTv4, the OneSided pair with refresh for unidirectional devices (``pcm-pulsed``
runs, but as a single bidirectional exp-step device), vector unit cells, the STOCHASTIC (two-pass) and
MEAN_COUNT pulse types, output choppers. The device state (hidden weights, buffers, counters) is not part of
``state_dict``: checkpoints carry the effective weights (``layer.weight``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..core.config import (_SUBNODES, BoundManagement, ConfigError, IOConfig, MappingConfig, NoiseManagement, TileConfig,
                     _Node, _num, register_subnode)
from ..kernels import pulsed as _k
from ..core.rng import Stream, check_seed

__all__ = ["ALGORITHMS", "InsituArray", "InsituConfig", "InsituTile", "PulsedArray", "UpdateConfig",
           "canonical_algorithm", "insitu", "load_device"]

ALGORITHMS = {
    "sgd": "sgd", "analog-sgd": "sgd",
    "tiki-taka": "tiki-taka", "tt": "tiki-taka", "ttv1": "tiki-taka",
    "ttv2": "ttv2",
    "c-ttv2": "c-ttv2", "ttv3": "c-ttv2", "chopped-ttv2": "c-ttv2",
    "mixed-precision": "mixed-precision", "mp": "mixed-precision",
}
PULSE_TYPES = ("stochastic_compressed", "deterministic_implicit", "none")


def canonical_algorithm(name: str) -> str:
    """The canonical algorithm name for ``name`` or its alias (error lists the choices)."""
    try:
        return ALGORITHMS[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown in-situ algorithm {name!r}; choose one of {sorted(ALGORITHMS)}") from None


# ================================================================================================= config

def _bool(owner, obj, name):
    if not isinstance(getattr(obj, name), bool):
        raise ConfigError(f"{owner}.{name} must be true or false, got {getattr(obj, name)!r}")


@dataclass(frozen=True)
class UpdateConfig(_Node):
    """Pulse-train update (physics.md §6; aihwkit ``UpdateParameters`` names and defaults).

    ``pulse_type``: "stochastic_compressed" (stochastic bit trains, + and - pulses in one pass),
    "deterministic_implicit" (n = rint(BL q(p_x) q(p_d)), p quantised to ``x_res_implicit``/``d_res_implicit``),
    "none" (floating-point update W -= lr d x^T, clipped to the device bounds; no pulses).
    """

    pulse_type: str = "stochastic_compressed"
    desired_bl: int = 31
    update_bl_management: bool = True
    update_management: bool = True
    um_grad_scale: float = 1.0
    fixed_bl: bool = True
    x_res_implicit: float = 0.01
    d_res_implicit: float = 0.01

    def __post_init__(self):
        o = "UpdateConfig"
        if self.pulse_type not in PULSE_TYPES:
            raise ConfigError(f"{o}.pulse_type = {self.pulse_type!r} is not one of {PULSE_TYPES}")
        _num(o, "desired_bl", self.desired_bl, 1, 1024, integer=True)
        object.__setattr__(self, "desired_bl", int(self.desired_bl))
        for n in ("update_bl_management", "update_management", "fixed_bl"):
            _bool(o, self, n)
        _num(o, "um_grad_scale", self.um_grad_scale, 0, 1e6, lo_open=True)
        _num(o, "x_res_implicit", self.x_res_implicit, 0, 1)
        _num(o, "d_res_implicit", self.d_res_implicit, 0, 1)


def _default_io():
    return IOConfig(bound_management=BoundManagement.NONE)


@dataclass(frozen=True)
class InsituConfig(TileConfig):
    """A ``TileConfig`` (periphery of the forward/backward reads) plus the in-situ algorithm and devices.

    Devices are card names (``device_models.available("pulsed")``) with optional parameter overrides
    (``device_params``), or ``"family:<name>"`` with all parameters in ``device_params``. ``fast_device``
    (TT family: the A array) defaults to ``device``. See the module docstring for the algorithms; field names
    follow aihwkit's compounds (training.md §2.3–§2.7).
    """

    backward_ideal: bool = False          # in-situ training reads the transposed product from the array
    algorithm: str = "sgd"
    device: str = "idealized"
    device_params: dict = field(default_factory=dict)
    fast_device: str = ""
    fast_device_params: dict = field(default_factory=dict)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    # transfer family (TT, TTv2, c-TTv2)
    transfer_forward: IOConfig = field(default_factory=IOConfig)
    transfer_update: UpdateConfig = field(default_factory=lambda: UpdateConfig(
        desired_bl=1, update_bl_management=False, update_management=False))
    gamma: float = 0.0
    fast_lr: float = 1.0
    scale_fast_lr: bool = True
    auto_scale: bool = False
    auto_momentum: float = 0.99
    transfer_lr: float = 1.0
    scale_transfer_lr: bool = True
    transfer_every: float = 1.0
    units_in_mbatch: bool = True
    n_reads_per_transfer: int = 1
    thres_scale: float = 1.0
    momentum: float = 0.0
    forget_buffer: bool = True
    max_transfer_pulses: int = 1
    in_chop_prob: float = 0.0
    # mixed precision
    granularity: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        o = "InsituConfig"
        object.__setattr__(self, "algorithm", canonical_algorithm(self.algorithm))
        for n in ("device", "fast_device"):
            if not isinstance(getattr(self, n), str):
                raise ConfigError(f"{o}.{n} must be a device card name (str), got {getattr(self, n)!r}")
        if not self.device:
            raise ConfigError(f"{o}.device must name a pulsed device card")
        for n in ("device_params", "fast_device_params"):
            v = getattr(self, n)
            if not isinstance(v, dict):
                raise ConfigError(f"{o}.{n} must be a dict of device parameters, got {type(v).__name__}")
        for n, cls in (("update", UpdateConfig), ("transfer_update", UpdateConfig), ("transfer_forward", IOConfig)):
            if not isinstance(getattr(self, n), cls):
                raise ConfigError(f"{o}.{n} must be a {cls.__name__}")
        for n in ("scale_fast_lr", "auto_scale", "scale_transfer_lr", "units_in_mbatch", "forget_buffer"):
            _bool(o, self, n)
        _num(o, "gamma", self.gamma, 0, 1e6)
        _num(o, "fast_lr", self.fast_lr, 0, 1e9)
        _num(o, "auto_momentum", self.auto_momentum, 0, 1)
        _num(o, "transfer_lr", self.transfer_lr, 0, 1e9)
        _num(o, "transfer_every", self.transfer_every, 0, 1e9)
        _num(o, "n_reads_per_transfer", self.n_reads_per_transfer, 1, 2**20, integer=True)
        _num(o, "thres_scale", self.thres_scale, 0, 1e9, lo_open=True)
        _num(o, "momentum", self.momentum, 0, 1)
        _num(o, "max_transfer_pulses", self.max_transfer_pulses, 0, 2**20, integer=True)
        _num(o, "in_chop_prob", self.in_chop_prob, 0, 1)
        _num(o, "granularity", self.granularity, 0, 1e6)

    def device_model(self, fast: bool = False):
        """The pulsed device model of the (slow or, with ``fast``, the fast) array."""
        if fast and self.fast_device:
            return load_device(self.fast_device, self.fast_device_params)
        return load_device(self.device, self.device_params)


# every sub-node of TileConfig (forward, backward, mapping, inference, ...) plus the in-situ ones
for (_p, _n), _c in list(_SUBNODES.items()):
    if _p is TileConfig:
        register_subnode(InsituConfig, _n, _c)
for _n, _c in (("update", UpdateConfig), ("transfer_update", UpdateConfig), ("transfer_forward", IOConfig)):
    register_subnode(InsituConfig, _n, _c)


def load_device(name: str, params: dict | None = None):
    """A pulsed device model: a card name with overrides, or ``"family:<family>"`` with all parameters."""
    import device_models
    from device_models import pulsed as _dp
    params = dict(params or {})
    if name.startswith("family:"):
        dev = device_models.from_params(name[len("family:"):], params, source=f"device {name!r}")
    else:
        dev = device_models.load(name, **params)
    if not isinstance(dev, _dp.PulsedDevice):
        raise ConfigError(f"device {name!r} is a {type(dev).__name__}, not a pulsed device model; pulsed cards: "
                          f"{device_models.available('pulsed')}")
    return dev


def _device_spec(dev) -> tuple[str, dict]:
    """(name, params) for a card name or a PulsedDevice instance (kept JSON-able)."""
    if isinstance(dev, str):
        return dev, {}
    from device_models import pulsed as _dp
    if isinstance(dev, _dp.PulsedDevice):
        params = {}
        for f in dataclasses.fields(dev):
            if not f.init:
                continue
            v = getattr(dev, f.name)
            params[f.name] = list(v) if isinstance(v, tuple) else v
        return "family:" + type(dev).family, params
    raise ConfigError(f"device must be a pulsed card name or a device_models.pulsed model, got {type(dev).__name__}")


# The transfer read of the TT family: aihwkit's default IOParameters (7-bit DAC, 9-bit ADC, out_noise 0.06) with
# noise and bound management off, which aihwkit's TransferRPUDeviceMetaParameter::initialize forces (v1.1.0).
TRANSFER_READ = IOConfig(noise_management=NoiseManagement.NONE, bound_management=BoundManagement.NONE)


def insitu(algorithm: str = "sgd", device="idealized", fast_device=None, tile: TileConfig | None = None,
           **overrides) -> InsituConfig:
    """An ``InsituConfig`` for ``algorithm`` on ``device`` with aihwkit's defaults (v1.1.0; training.md §2.8).

    Tiki-Taka v1 (``TransferCompound``): A is updated with the absolute fast LR ``fast_lr`` = 1 (aihwkit 1.1.0's
    ``getPulseCountLearningRate``; unreleased aihwkit main adds ``scale_fast_lr``, default on), C by the default
    update parameters (BL 31, update and BL management) with LR lr; the read has noise and bound management off
    (``TRANSFER_READ``; the read itself keeps the default out_noise 0.06 and converters). TTv2 / c-TTv2: as
    ``BufferedTransferCompound`` / ``ChoppedTransferCompound`` with ``build_config``'s update BL 5.

    ``device``/``fast_device``: a pulsed card name (e.g. "reram-es", "soft-bounds"-family cards, "idealized")
    or a ``device_models.pulsed`` model instance. ``tile``: periphery of the forward/backward reads (default
    aihwkit's defaults, no bound management on the backward). Keyword overrides set any InsituConfig field.
    """
    alg = canonical_algorithm(algorithm)
    dname, dparams = _device_spec(device)
    kw: dict = {"algorithm": alg, "device": dname, "device_params": dparams}
    if fast_device is not None:
        fname, fparams = _device_spec(fast_device)
        kw.update(fast_device=fname, fast_device_params=fparams)
    if alg in ("tiki-taka", "ttv2", "c-ttv2"):
        kw.update(transfer_forward=TRANSFER_READ)
    if alg == "tiki-taka":
        kw.update(fast_lr=1.0, scale_fast_lr=False, transfer_update=UpdateConfig())
    elif alg == "ttv2":
        kw.update(update=UpdateConfig(desired_bl=5), scale_fast_lr=False, fast_lr=1.0, units_in_mbatch=False,
                  transfer_every=1.0, max_transfer_pulses=1, in_chop_prob=0.0)
    elif alg == "c-ttv2":
        kw.update(update=UpdateConfig(desired_bl=5), scale_fast_lr=False, fast_lr=0.1, auto_scale=True,
                  units_in_mbatch=False, transfer_every=1.0, max_transfer_pulses=1, in_chop_prob=0.1)
    if tile is not None:
        kw.update(forward=tile.forward, backward=tile.backward, mapping=tile.mapping)
    kw.update(overrides)
    return InsituConfig(**kw)


# ================================================================================================= arrays

def _c32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def _serial_if_small(work: int):
    """numba kernels on the calling thread below 2^15 units of in-situ work (``aimc.threads``, the one thread
    policy; its threshold counts elements, 2^16)."""
    from ..core.threads import kernel_threads
    return kernel_threads(2 * work)


class PulsedArray:
    """One crossbar array of pulsed devices: per-device parameters, hidden and visible weights, counters.

    ``w``: hidden persistent weights w_p (float32, updated in place by the kernels); ``visible``: what the
    periphery reads, w_p - reference + write noise (redrawn for devices touched by an update);
    ``pulses``: pulses received per device (int64 total in ``n_pulses``).
    """

    def __init__(self, device, shape: tuple[int, int], seed: int = 0, stream_id: str = "array"):
        from device_models import pulsed as _dp
        self.device = device
        self.shape = (int(shape[0]), int(shape[1]))
        self.stream = Stream(seed, f"{stream_id}/pulses")
        self.devs = device.sample_devices(self.shape, Stream(seed, f"{stream_id}/d2d").numpy_generator())
        devs = self.devs
        self.DWUD = np.ascontiguousarray(np.stack([devs.dw_up, devs.dw_down]), dtype=np.float32)
        self.w_max, self.w_min = _c32(devs.w_max), _c32(devs.w_min)
        self.reference = _c32(devs.reference)
        dummy3 = np.zeros((1, 1, 1), np.float32)
        f32 = np.zeros(1, np.float32)
        f64 = np.zeros(1, np.float64)
        self.tab_up = self.tab_dn = f32
        self.nodes = self.lut_up = self.lut_dn = f64
        self.P = dummy3
        if isinstance(device, _dp.ConstantStep):
            self.fam = _k.FAM_CONST
        elif isinstance(device, (_dp.LinearStep, _dp.SoftBounds)):
            self.fam = _k.FAM_LINEAR
            self.P = np.ascontiguousarray(np.stack([devs.slope_up, devs.slope_down]), dtype=np.float32)
        elif isinstance(device, _dp.ExpStep):
            self.fam = _k.FAM_EXP
            self.P = np.ascontiguousarray(np.stack([devs.A_up, devs.A_down, devs.gamma_up, devs.gamma_down,
                                                    devs.exp_scale, devs.exp_offset]), dtype=np.float32)
        elif isinstance(device, _dp.PowStep):
            self.fam = _k.FAM_POW
            self.P = np.ascontiguousarray(np.stack([devs.gamma_up, devs.gamma_down]), dtype=np.float32)
        elif isinstance(device, _dp.PiecewiseStep):
            self.fam = _k.FAM_PIECEWISE
            self.tab_up, self.tab_dn = _c32(devs.piecewise_up), _c32(devs.piecewise_down)
        elif isinstance(device, _dp.PulsedLookupTable):
            self.fam = _k.FAM_LUT
            self.nodes = np.ascontiguousarray(devs.w_nodes, dtype=np.float64)
            self.lut_up = np.ascontiguousarray(devs.lut_up, dtype=np.float64)
            self.lut_dn = np.ascontiguousarray(devs.lut_down, dtype=np.float64)
        else:
            raise ConfigError(f"no pulsed kernel for device family {type(device).family!r}")
        if isinstance(device, _dp.ExpStep) and (device.dw_min_std_add > 0 or device.dw_min_std_slope > 0):
            self.noise_mode = _k.NOISE_EXT
            self.std_add, self.std_slope = float(device.dw_min_std_add), float(device.dw_min_std_slope)
        else:
            self.noise_mode = _k.NOISE_MULT if device.mult_noise else _k.NOISE_ADD
            self.std_add = self.std_slope = 0.0
        self.sigma = float(device.dw_min_std)
        self.dw_min = float(device.dw_min)
        self.write_noise = float(device.write_noise_std) * float(device.dw_min)
        self.has_decay = bool(np.any(devs.decay_rate != 0))
        self.has_diffusion = bool(np.any(devs.diffusion_rate != 0))
        self.w = np.minimum(np.maximum(self.reference.copy(), self.w_min), self.w_max)
        self.visible = np.empty(self.shape, np.float32)
        self.touched = np.zeros(self.shape, np.uint8)
        self.pulses = np.zeros(self.shape, np.int32)
        self.n_pulses = 0
        self.sigma_off = False      # tests: switch the c2c noise off (parity with the noise-free oracle)
        self._refresh(all_rows=True)

    # -------------------------------------------------------------- state
    def _refresh(self, all_rows: bool = False) -> None:
        """visible = w_p - reference, plus fresh write noise on the touched devices (all if ``all_rows``)."""
        if self.write_noise > 0:
            z = self.stream.normal(self.shape)
            fresh = self.w - self.reference + np.float32(self.write_noise) * z
            if all_rows:
                self.visible[...] = fresh
            else:
                np.copyto(self.visible, fresh, where=self.touched.view(bool))
        else:
            np.subtract(self.w, self.reference, out=self.visible)
        self.touched[...] = 0

    def set_weights(self, W) -> None:
        """Write W directly into the hidden weights (clipped to each device's bounds; no pulses counted)."""
        W = np.asarray(W, np.float32)
        self.w[...] = np.minimum(np.maximum(W + self.reference, self.w_min), self.w_max)
        self._refresh(all_rows=True)

    def _kargs(self):
        return (self.w, self.DWUD, self.w_max, self.w_min, self.P, self.fam, self.noise_mode,
                0.0 if self.sigma_off else self.sigma, self.std_add, self.std_slope, self.tab_up, self.tab_dn,
                self.nodes, self.lut_up, self.lut_dn)

    # -------------------------------------------------------------- verbs
    def update(self, x: np.ndarray, d: np.ndarray, lr: float, ucfg: UpdateConfig, record: np.ndarray | None = None,
               refresh: bool = True) -> None:
        """Pulsed W <- W - lr d^T x over the rows of x (batch, in) and d (batch, out), sample by sample."""
        with _serial_if_small(x.shape[0] * (self.shape[0] + self.shape[1])):
            self._update(x, d, lr, ucfg, record, refresh)

    def _update(self, x, d, lr, ucfg, record, refresh):
        x = np.ascontiguousarray(x, np.float32)
        d = np.ascontiguousarray(d, np.float32)
        nb = x.shape[0]
        if lr == 0 or nb == 0:
            return
        if ucfg.pulse_type == "none":
            dW = d.T @ x
            self.w[...] = np.minimum(np.maximum(self.w - np.float32(lr) * dW, self.w_min), self.w_max)
            self.touched[...] = 1
            if refresh:
                self._refresh()
            return
        BL = np.empty(nb, np.int32)
        sx = np.empty(nb, np.float32)
        sd = np.empty(nb, np.float32)
        _k.management(x, d, float(lr), self.dw_min, int(ucfg.desired_bl), ucfg.update_bl_management,
                      ucfg.update_management, float(ucfg.um_grad_scale), ucfg.fixed_bl, BL, sx, sd)
        blmax = int(BL.max()) if nb else 0
        if blmax == 0:
            return
        rec = record if record is not None else np.zeros((0, 0, 0), np.int32)
        kn0, kn1, cn = self.stream.next_call()
        cn = np.uint32(cn & 0xFFFFFFFF)
        if ucfg.pulse_type == "deterministic_implicit":
            qx = np.empty_like(x)
            qd = np.empty_like(d)
            _k.implicit_probs(x, sx, BL, np.float32(ucfg.x_res_implicit), qx)
            _k.implicit_probs(d, sd, BL, np.float32(ucfg.d_res_implicit), qd)
            before = int(self.pulses.sum(dtype=np.int64))
            _k.update_implicit(*self._kargs(), qx, qd, BL, kn0, kn1, cn, self.pulses, self.touched, rec)
        else:
            nw = (blmax + 31) // 32
            nwj = (x.shape[1] + 31) // 32
            XT = np.empty((nb, 32 * nw, nwj), np.uint32)
            SX = np.empty((nb, nwj), np.uint32)
            CNT = np.empty((nb, 32 * nw), np.int32)
            nblk = (d.shape[1] + 15) // 16
            DW = np.empty((nblk, nb + 1, nw, 16), np.uint32)   # +1 sample of padding: block stride not 4 KiB-aligned
            SD = np.empty((nblk, nb + 4, 16), np.uint8)        # (the padding is never read)
            kx0, kx1, cx = self.stream.next_call()
            kd0, kd1, cd = self.stream.next_call()
            _k.x_trains(x, sx, BL, kx0, kx1, np.uint32(cx & 0xFFFFFFFF), XT, SX, CNT)
            OFF = np.zeros(CNT.size + 1, np.int64)
            np.cumsum(CNT.ravel(), out=OFF[1:])
            IDX = np.empty(int(OFF[-1]), np.int32)
            _k.x_lists(XT, SX, OFF, IDX)
            _k.d_trains(d, sd, BL, kd0, kd1, np.uint32(cd & 0xFFFFFFFF), DW, SD)
            before = int(self.pulses.sum(dtype=np.int64))
            maxlen = int(np.diff(OFF[::32 * nw]).max())
            FB = np.empty((d.shape[1], (nb + 31) // 32), np.uint32)
            _k.fired_rows(DW, BL, FB)
            _k.update_trains(*self._kargs(), OFF, IDX, 32 * nw, maxlen, DW, SD, FB, kn0, kn1, cn, self.pulses,
                             self.touched, rec)
        self.n_pulses += int(self.pulses.sum(dtype=np.int64)) - before
        if refresh:
            self._refresh()

    def apply_counts(self, n: np.ndarray, refresh: bool = True) -> None:
        """|n_ij| pulses of sign(n_ij) on every device, one at a time with c2c noise."""
        n = np.ascontiguousarray(n, np.int32)
        k0, k1, c = self.stream.next_call()
        with _serial_if_small(int(np.abs(n).sum()) + n.size // 8):
            _k.apply_counts(*self._kargs(), n, k0, k1, np.uint32(c & 0xFFFFFFFF), self.pulses, self.touched)
        self.n_pulses += int(np.abs(n).sum(dtype=np.int64))
        if refresh:
            self._refresh()

    def post_batch(self) -> None:
        """Once per mini-batch: lifetime decay and diffusion of the hidden weights (if the device has them)."""
        if self.has_decay:
            self.w[...] = self.device.decay(self.w, self.devs)
            self.touched[...] = 1
        if self.has_diffusion:
            self.w[...] = self.device.diffuse(self.w, self.devs, self.stream.numpy_generator())
            self.touched[...] = 1
        if self.has_decay or self.has_diffusion:
            self._refresh()


# ================================================================================================= algorithms

class InsituTile:
    """An in-situ training algorithm on one ``aimc.Tile``: device arrays, update rule, transfer state.

    ``update(x, d, lr)`` applies one mini-batch (x: (batch, in), d: (batch, out) = dL/dy) and mirrors the
    effective weights into ``tile`` (``tile.set_weights``).
    """

    def __init__(self, tile, config: InsituConfig, seed: int = 0, tile_id: str = "tile"):
        if not isinstance(config, InsituConfig):
            raise ConfigError(f"InsituTile needs an InsituConfig (aimc.insitu(...)), got {type(config).__name__}")
        self.tile = tile
        self.config = config
        self.algorithm = config.algorithm
        self.seed = check_seed(seed)
        self.tile_id = tile_id
        shape = (tile.out_size, tile.in_size)
        self.shape = shape
        self.stream = Stream(self.seed, f"{tile_id}/insitu")
        self.transfers = 0
        self.updates = 0
        self.samples = 0
        self._since = 0.0
        self._col = 0
        if self.algorithm in ("sgd", "mixed-precision"):
            self.W = PulsedArray(config.device_model(), shape, self.seed, f"{tile_id}/W")
            self.arrays = {"W": self.W}
            if self.algorithm == "mixed-precision":
                self.chi = np.zeros(shape, np.float32)
        else:
            self.A = PulsedArray(config.device_model(fast=True), shape, self.seed, f"{tile_id}/A")
            self.C = PulsedArray(config.device_model(), shape, self.seed, f"{tile_id}/C")
            self.arrays = {"A": self.A, "C": self.C}
            self._xbar = self._dbar = 0.0         # auto-scale running averages (0 = no sample seen yet)
            io = MappingConfig(max_in=0, max_out=0)
            from ..core.tile import Tile
            self.read_tile = Tile(shape[0], shape[1], TileConfig(forward=config.transfer_forward, mapping=io),
                                  self.seed, f"{tile_id}/transfer-read")
            if self.algorithm in ("ttv2", "c-ttv2"):
                self.H = np.zeros(shape, np.float32)
                self.chop = np.ones(shape[1], np.float32)
        self.set_weights(tile.read_weights())

    # -------------------------------------------------------------- weights
    def weights(self) -> np.ndarray:
        """Effective weights the forward reads: W (sgd, mp) or gamma*A + C (TT family)."""
        if hasattr(self, "W"):
            return self.W.visible
        if self.config.gamma:
            return self.C.visible + np.float32(self.config.gamma) * self.A.visible
        return self.C.visible

    def set_weights(self, W) -> None:
        """Write W into the devices (the slow array C for the TT family, with A and the buffers zeroed)."""
        W = np.asarray(W, np.float32)
        if hasattr(self, "W"):
            self.W.set_weights(W)
            if hasattr(self, "chi"):
                self.chi[...] = 0
        else:
            self.A.set_weights(np.zeros(self.shape, np.float32))
            self.C.set_weights(W)
            if hasattr(self, "H"):
                self.H[...] = 0
        self._mirror()

    def _mirror(self) -> None:
        self.tile.set_weights(self.weights())

    # -------------------------------------------------------------- the step
    def update(self, x, d, lr: float, mirror: bool = True) -> None:
        x = np.ascontiguousarray(x, np.float32)
        d = np.ascontiguousarray(d, np.float32)
        if x.ndim != 2 or d.ndim != 2 or x.shape[0] != d.shape[0] or x.shape[1] != self.shape[1] \
                or d.shape[1] != self.shape[0]:
            raise ValueError(f"update: x {x.shape} and d {d.shape} do not fit a tile of shape {self.shape} "
                             f"(need x (batch, {self.shape[1]}), d (batch, {self.shape[0]}))")
        lr = float(lr)
        cfg = self.config
        alg = self.algorithm
        if alg == "sgd":
            self.W.update(x, d, lr, cfg.update)
        elif alg == "mixed-precision":
            self.chi -= np.float32(lr) * (d.T @ x)
            self._since += 1
            n_tr = self._n_transfers()
            if n_tr:
                eps = np.float32(cfg.granularity if cfg.granularity > 0 else self.W.dw_min)
                n = np.empty(self.shape, np.int32)
                with _serial_if_small(self.chi.size // 4):
                    _k.mp_transfer(self.chi, eps, n)
                if np.any(n):
                    self.W.apply_counts(n)
                self.transfers += 1
        else:
            self._transfer_family(x, d, lr)
        for a in self.arrays.values():
            a.post_batch()
        self.updates += 1
        self.samples += x.shape[0]
        if mirror:
            self._mirror()

    def _n_transfers(self) -> int:
        every = self.config.transfer_every
        if every <= 0:
            self._since = 0.0
            return 0
        n = int(self._since // every)
        self._since -= n * every
        return n

    def _base_fast_lr(self, lr) -> float:
        """fast_lr (times lr if ``scale_fast_lr``); lr itself if fast_lr is 0 (aihwkit's getPulseCountLearningRate)."""
        cfg = self.config
        if cfg.fast_lr <= 0:
            return lr
        return cfg.fast_lr * lr if cfg.scale_fast_lr else cfg.fast_lr

    def _auto_scale(self, x, d):
        """Per-sample running averages (x_bar_b, d_bar_b) of the samples' abs-maxima, as aihwkit's CPU
        ``ChoppedTransferRPUDevice`` (v1.1.0): for every sample in order m <- (1 - tau) m + tau max|v_b| with
        tau = (1 - auto_momentum)/batch (the first sample sets m; samples with max 0 are skipped)."""
        tau = (1.0 - self.config.auto_momentum) / max(x.shape[0], 1)
        xb = np.empty(x.shape[0], np.float64)
        db = np.empty(x.shape[0], np.float64)
        self._xbar = _k.auto_scale_ema(np.abs(x).max(axis=1).astype(np.float64), self._xbar, tau, xb)
        self._dbar = _k.auto_scale_ema(np.abs(d).max(axis=1).astype(np.float64), self._dbar, tau, db)
        return xb, db

    def _fast_lr(self, x, d, lr):
        """LR of the A update: a number, or with ``auto_scale`` one per sample (base * desired_bl * dw_min_A /
        (x_bar_b * d_bar_b), base where an average is still 0)."""
        base = self._base_fast_lr(lr)
        if not self.config.auto_scale:
            return base
        xb, db = self._auto_scale(x, d)
        den = xb * db
        return np.where(den > 0, base * self.config.update.desired_bl * self.A.dw_min / np.where(den > 0, den, 1.0),
                        base)

    def _transfer_family(self, x, d, lr) -> None:
        cfg = self.config
        buffered = self.algorithm in ("ttv2", "c-ttv2")
        lr_a = self._fast_lr(x, d, lr)
        xa = x * self.chop if buffered and cfg.in_chop_prob > 0 else x
        if np.ndim(lr_a):
            # one LR per sample: d_b * lr_b / lr_ref with lr_ref; the pulse probabilities are the same as with lr_b
            # under update management (they depend on lr * |d| only), in expectation otherwise
            ref = float(lr_a.max())
            if ref > 0:
                self.A.update(xa, d * (lr_a / ref).astype(np.float32)[:, None], ref, cfg.update)
        else:
            self.A.update(xa, d, lr_a, cfg.update)
        self._since += 1 if cfg.units_in_mbatch else x.shape[0]
        n_tr = self._n_transfers()
        if n_tr == 0:
            return
        n_cols = n_tr * cfg.n_reads_per_transfer
        cols = (self._col + np.arange(n_cols)) % self.shape[1]
        self._col = int((self._col + n_cols) % self.shape[1])
        self.read_tile.set_weights(self.A.visible)
        lr_t = cfg.transfer_lr * (lr if cfg.scale_transfer_lr else 1.0)
        if not buffered:
            # TT v1: each read column v = A e_k (noisy) written into C by a pulsed rank-1 update C += lr_t v e_k^T
            for start in range(0, n_cols, self.shape[1]):
                cs = cols[start:start + self.shape[1]]
                E = np.zeros((len(cs), self.shape[1]), np.float32)
                E[np.arange(len(cs)), cs] = 1.0
                V = self.read_tile.forward(E)
                self.C.update(E, -V, lr_t, cfg.transfer_update)
            self.transfers += n_cols
            return
        # TTv2 / c-TTv2: buffer in pulse units, threshold 1, n = trunc(H) pulses on C
        scale = np.float32(lr_t / (cfg.thres_scale * self.A.dw_min))
        mom = np.float32(cfg.momentum)
        for start in range(0, n_cols, self.shape[1]):
            cs = cols[start:start + self.shape[1]]
            E = np.zeros((len(cs), self.shape[1]), np.float32)
            E[np.arange(len(cs)), cs] = 1.0
            V = self.read_tile.forward(E)
            n = np.zeros(self.shape, np.int32)
            with _serial_if_small(self.shape[0] * len(cs) * 8):
                _k.buffer_transfer(self.H, cs.astype(np.int64), np.ascontiguousarray(V, np.float32), self.chop,
                                   scale, int(cfg.max_transfer_pulses), mom, cfg.forget_buffer, n)
            if cfg.in_chop_prob > 0:          # each read column's chopper switches after its read
                flips = self.stream.uniform((len(cs),)) < cfg.in_chop_prob
                self.chop[cs[flips]] *= -1
            if np.any(n):
                self.C.apply_counts(n)
        self.transfers += n_cols

    # -------------------------------------------------------------- counters
    def counters(self) -> dict:
        """Pulses per device (per array), totals, transfers, updates and samples seen."""
        out = {"algorithm": self.algorithm, "updates": self.updates, "samples": self.samples,
               "transfers": self.transfers}
        for name, a in self.arrays.items():
            out[f"pulses_{name}"] = a.n_pulses
            out[f"pulses_per_device_{name}"] = a.pulses
        out["pulses"] = sum(a.n_pulses for a in self.arrays.values())
        return out


class InsituArray:
    """The grid of :class:`InsituTile` over a ``TileArray`` (one algorithm instance per physical tile)."""

    def __init__(self, tiles, config: InsituConfig, seed: int | None = None, name: str | None = None):
        self.tiles = tiles
        self.config = config
        seed = tiles.seed if seed is None else seed
        name = tiles.name if name is None else name
        self.out_splits = list(tiles.out_splits)
        self.in_splits = list(tiles.in_splits)
        self._ro = np.concatenate([[0], np.cumsum(self.out_splits)]).astype(int)
        self._ci = np.concatenate([[0], np.cumsum(self.in_splits)]).astype(int)
        self.grid = [[InsituTile(t, config, seed, f"{name}/tile({r},{c})") for c, t in enumerate(row)]
                     for r, row in enumerate(tiles.tiles)]

    @property
    def shape(self):
        return (int(self._ro[-1]), int(self._ci[-1]))

    def _blocks(self):
        for r, row in enumerate(self.grid):
            for c, it in enumerate(row):
                yield slice(self._ro[r], self._ro[r + 1]), slice(self._ci[c], self._ci[c + 1]), it

    def set_weights(self, W) -> None:
        W = np.asarray(W, np.float32)
        if W.shape != self.shape:
            raise ValueError(f"W has shape {W.shape}, expected {self.shape}")
        for rs, cs, it in self._blocks():
            it.set_weights(W[rs, cs])

    def weights(self) -> np.ndarray:
        W = np.empty(self.shape, np.float32)
        for rs, cs, it in self._blocks():
            W[rs, cs] = it.weights()
        return W

    def update(self, x, d, lr: float, mirror: bool = True) -> None:
        """One mini-batch: x (batch, in), d (batch, out); each tile updates with its slices. ``mirror``: write the
        new effective weights into the tiles (``AnalogSGD`` leaves that to the layer's next forward)."""
        x = np.ascontiguousarray(x, np.float32)
        d = np.ascontiguousarray(d, np.float32)
        if x.ndim != 2 or d.ndim != 2 or x.shape[0] != d.shape[0] or x.shape[1] != self.shape[1] \
                or d.shape[1] != self.shape[0]:
            raise ValueError(f"update: x {x.shape} and d {d.shape} do not fit {self.shape} (out, in)")
        if not (np.isfinite(x).all() and np.isfinite(d).all()):
            raise ValueError("update: x or d contains NaN or inf")
        single = len(self.grid) == 1 and len(self.grid[0]) == 1
        for rs, cs, it in self._blocks():
            if single:
                it.update(x, d, lr, mirror)
            else:
                it.update(np.ascontiguousarray(x[:, cs]), np.ascontiguousarray(d[:, rs]), lr, mirror)

    def counters(self) -> dict:
        """Totals over the tiles plus per-device pulse maps (assembled to the full matrix)."""
        tot = {"algorithm": self.config.algorithm, "updates": 0, "samples": 0, "transfers": 0, "pulses": 0}
        maps = {}
        for rs, cs, it in self._blocks():
            c = it.counters()
            tot["updates"] = max(tot["updates"], c["updates"])
            tot["samples"] = max(tot["samples"], c["samples"])
            tot["transfers"] += c["transfers"]
            tot["pulses"] += c["pulses"]
            for name in it.arrays:
                tot[f"pulses_{name}"] = tot.get(f"pulses_{name}", 0) + c[f"pulses_{name}"]
                m = maps.setdefault(name, np.zeros(self.shape, np.int64))
                m[rs, cs] = c[f"pulses_per_device_{name}"]
        for name, m in maps.items():
            tot[f"pulses_per_device_{name}"] = m
        return tot


class _CallableModule(type(math)):
    """``aimc.insitu`` is this module and also the factory: ``aimc.insitu("tiki-taka", device="reram-es")``."""

    def __call__(self, algorithm: str = "sgd", device="idealized", **kw) -> InsituConfig:
        return insitu(algorithm, device, **kw)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
