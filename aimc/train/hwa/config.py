"""HWA configuration nodes (``HWAConfig`` and its parts) and the presets (training.md §1; Rasch et al. 2023)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


from ...core.config import (ConfigError, TileConfig, _enum, _Node, _num, register_subnode)
from ...core.config import ideal as _ideal_tile
from ...core.config import standard_hwa as _standard_hwa_tile


# ============================================================================================ configuration

class ModifierType(str, enum.Enum):
    """Training-time weight perturbation (training.md §1.2); ξ ~ N(0, 1), U ~ U[0, 1), a = |w|/amax."""

    NONE = "none"                    # w
    ADD_NORMAL = "add_normal"        # w + std_dev·amax·ξ
    MULT_NORMAL = "mult_normal"      # w·(1 + std_dev·amax·ξ)   (aihwkit C++; equals its torch tile when amax = 1)
    POLY = "poly"                    # w + amax·std_dev·(c0 + c1·a + c2·a² + ...)·ξ
    PROG_NOISE = "prog_noise"        # sign(w)·|w + amax·(std_dev/g_max)·(c0 + c1·a + ...)·ξ|, c in µS
    DISCRETIZE = "discretize"        # round(w/(amax·res))·amax·res (step amax·res), optional stochastic
    DISCRETIZE_ADD_NORMAL = "discretize_add_normal"  # discretize, then + std_dev·amax·ξ
    DROP_CONNECT = "drop_connect"    # w (only pdrop acts)
    PCM_NOISE = "pcm_noise"          # PCM programming + drift variation + read noise at pcm_t_inference


class ClipType(str, enum.Enum):
    """Weight clipping after every optimizer step (training.md §1.3)."""

    NONE = "none"
    FIXED_VALUE = "fixed_value"              # |w| <= fixed_value
    LAYER_GAUSSIAN = "layer_gaussian"        # |w| <= sigma·std(W)
    AVERAGE_CHANNEL_MAX = "average_channel_max"  # |w| <= mean over output channels of max_j |w_ij|


class RemapType(str, enum.Enum):
    """Weight remapping after every optimizer step; the factor moves into the digital output scale."""

    NONE = "none"
    LAYERWISE_SYMMETRIC = "layerwise_symmetric"      # max |W| -> remapped_wmax, one factor per layer
    CHANNELWISE_SYMMETRIC = "channelwise_symmetric"  # max_j |w_ij| -> remapped_wmax per output column i


def _bool(owner, obj, name):
    if not isinstance(getattr(obj, name), bool):
        raise ConfigError(f"{owner}.{name} must be true or false, got {getattr(obj, name)!r}")


@dataclass(frozen=True)
class WeightModifier(_Node):
    """Training-time weight modifier (aihwkit ``WeightModifierParameter``; training.md §1.2).

    amax: see the module docstring (``rel_to_actual_wmax``, ``assumed_wmax``).

    * ``coeffs`` (POLY, PROG_NOISE): empty = the PCM programming-noise polynomial of the ``pcm_device`` card
      (Nandakumar et al. 2019: c = (0.26348, 1.9650, -1.1731) µS at g_max = 25 µS). POLY uses it divided by
      the card's reference g_max, i.e. (0.0105392, 0.0786, -0.046924). aihwkit's POLY default has
      c1 = 0.0768, a digit swap of 1.965/25 = 0.0786; aimc uses the value derived from the card (to get
      aihwkit's numbers, pass ``coeffs=(0.0105392, 0.0768, -0.046925)``). PROG_NOISE uses the µS
      coefficients with std_dev/g_max (``g_max`` 25 µS).
    * ``res`` (DISCRETIZE*): step as a fraction of amax, or, if > 1, a number of steps (res <- 1/res), as
      the IO quantisers read it. Deterministic rounding is half-to-even; ``sto_round`` rounds
      stochastically, rint(w/step + U - 0.5). No clipping to ±amax.
    * ``pdrop``: each weight is set to 0 with probability pdrop (DROP_CONNECT; combines with every type).
    * PCM_NOISE: the weight is mapped to a differential pair of the ``pcm_device`` card (any inference
      card: pcm-joshi2020, hermes-*, ...): G± = g_max·max(±w, 0)/amax (clipped to g_max); both devices are
      programmed (programming noise, drift exponent ν), then read at ``pcm_t_inference`` seconds after
      programming (power-law drift + accumulated 1/f read noise), w' = amax·(G⁺ - G⁻)/g_max. The *mean*
      drift is excluded: w' is multiplied by Σ|w_prog|/Σ|w_drift,mean| over the layer (the noise-free drift
      of the same devices), the factor that global drift compensation restores on the chip, so only the
      drift *variation* remains. ``g_max`` is ignored here (the card's own g_max is used).

    Not supported: aihwkit's ``per_batch_sample`` (one sample per batch row) and ``copy_last_column`` (aimc
    keeps biases digital), and the DOREFA type.
    """

    type: ModifierType = ModifierType.NONE
    std_dev: float = 0.0
    res: float = 0.0
    sto_round: bool = False
    pdrop: float = 0.0
    rel_to_actual_wmax: bool = True
    assumed_wmax: float = 1.0
    enable_during_test: bool = False
    coeffs: tuple = ()
    g_max: float = 25.0
    pcm_device: str = "pcm-joshi2020"
    pcm_t_inference: float = 0.0

    def __post_init__(self):
        o = "WeightModifier"
        _enum(o, self, "type", ModifierType)
        _num(o, "std_dev", self.std_dev, 0, 1e6)
        _num(o, "res", self.res, 0, 1e9)
        _num(o, "pdrop", self.pdrop, 0, 1)
        if self.pdrop >= 1:
            raise ConfigError(f"{o}.pdrop = {self.pdrop} is out of range [0, 1)")
        _num(o, "assumed_wmax", self.assumed_wmax, 0, 1e9, lo_open=True)
        _num(o, "g_max", self.g_max, 0, 1e9, lo_open=True)
        _num(o, "pcm_t_inference", self.pcm_t_inference, 0, 1e12)
        for name in ("sto_round", "rel_to_actual_wmax", "enable_during_test"):
            _bool(o, self, name)
        c = tuple(self.coeffs)
        object.__setattr__(self, "coeffs", c)
        for i, v in enumerate(c):
            _num(o, f"coeffs[{i}]", v)
        if not isinstance(self.pcm_device, str) or not self.pcm_device:
            raise ConfigError(f"{o}.pcm_device must be a card name, got {self.pcm_device!r}")
        t = self.type
        if t in (ModifierType.DISCRETIZE, ModifierType.DISCRETIZE_ADD_NORMAL) and self.res <= 0:
            raise ConfigError(f"{o}.res must be > 0 for type {t.value!r} (step = amax·res), got {self.res}")
        if t == ModifierType.PCM_NOISE:
            try:
                import device_models as dm
                dm.read_card(self.pcm_device)
            except Exception as e:  # unknown card: name the field
                raise ConfigError(f"{o}.pcm_device = {self.pcm_device!r}: {e}") from None

    @property
    def active(self) -> bool:
        return self.type != ModifierType.NONE or self.pdrop > 0


@dataclass(frozen=True)
class WeightClip(_Node):
    """Clipping after every optimizer step (aihwkit ``WeightClipParameter``). ``fixed_value`` > 0 also
    applies (as a second bound) under LAYER_GAUSSIAN and AVERAGE_CHANNEL_MAX; -1 = off."""

    type: ClipType = ClipType.NONE
    fixed_value: float = -1.0
    sigma: float = 2.5

    def __post_init__(self):
        o = "WeightClip"
        _enum(o, self, "type", ClipType)
        _num(o, "fixed_value", self.fixed_value, -1, 1e9)
        _num(o, "sigma", self.sigma, 0, 1e6, lo_open=True)
        if self.type == ClipType.FIXED_VALUE and self.fixed_value <= 0:
            raise ConfigError(f"{o}.fixed_value must be > 0 for type 'fixed_value', got {self.fixed_value}")


@dataclass(frozen=True)
class WeightRemap(_Node):
    """Remapping after every optimizer step (aihwkit ``WeightRemapParameter``): the weights are divided by
    f = max|W|/remapped_wmax (per column or per layer) and the digital output scale multiplied by f."""

    type: RemapType = RemapType.NONE
    remapped_wmax: float = 1.0

    def __post_init__(self):
        _enum("WeightRemap", self, "type", RemapType)
        _num("WeightRemap", "remapped_wmax", self.remapped_wmax, 0, 1e9, lo_open=True)


@dataclass(frozen=True)
class InputRange(_Node):
    """Learned input range per tile input split (aihwkit ``pre_post.input_range``; training.md §1.4).

    Needs the tile's forward noise management NONE or CONSTANT and bound management NONE (the range does the
    scaling). ``init_from_data`` = N > 0: during the first N training batches r <- (r·i + init_std_alpha·
    std(x))/(i + 1), then |r|. Gradient of r (δ: gradient at the clipped input): g = Σ_{x>=r} min(δ, 0)
    - Σ_{x<=-r} max(δ, 0); g <- g·r if ``gradient_relative``; g <- g·gradient_scale; plus decay·r if the
    fraction of |x| < r exceeds ``input_min_percentage``. The input gradient passes straight through the clip
    (unmasked), as in aihwkit. ``manage_output_clipping`` is not supported (must stay False).
    """

    enable: bool = False
    init_value: float = 3.0
    init_from_data: int = 100
    init_std_alpha: float = 3.0
    decay: float = 0.001
    input_min_percentage: float = 0.95
    output_min_percentage: float = 0.95
    manage_output_clipping: bool = False
    gradient_scale: float = 1.0
    gradient_relative: bool = True

    def __post_init__(self):
        o = "InputRange"
        for name in ("enable", "manage_output_clipping", "gradient_relative"):
            _bool(o, self, name)
        _num(o, "init_value", self.init_value, 0, 1e9, lo_open=True)
        _num(o, "init_from_data", self.init_from_data, 0, 2**31, integer=True)
        _num(o, "init_std_alpha", self.init_std_alpha, 0, 1e6, lo_open=True)
        _num(o, "decay", self.decay, 0, 1e6)
        _num(o, "input_min_percentage", self.input_min_percentage, 0, 1)
        _num(o, "output_min_percentage", self.output_min_percentage, 0, 1)
        _num(o, "gradient_scale", self.gradient_scale, 0, 1e9)
        if self.manage_output_clipping:
            raise ConfigError("InputRange.manage_output_clipping = true is not supported by aimc "
                              "(the ADC clip flags are not returned per tile); leave it false")


@dataclass(frozen=True)
class HWAConfig(_Node):
    """Everything HWA adds to a layer beyond its ``TileConfig`` (which gives the noisy forward)."""

    modifier: WeightModifier = field(default_factory=WeightModifier)
    clip: WeightClip = field(default_factory=WeightClip)
    remap: WeightRemap = field(default_factory=WeightRemap)
    input_range: InputRange = field(default_factory=InputRange)
    learn_out_scaling: bool = False

    def __post_init__(self):
        for name, cls in (("modifier", WeightModifier), ("clip", WeightClip), ("remap", WeightRemap),
                          ("input_range", InputRange)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"HWAConfig.{name} must be a {cls.__name__}, "
                                  f"got {type(getattr(self, name)).__name__}")
        _bool("HWAConfig", self, "learn_out_scaling")


for _name, _cls in (("modifier", WeightModifier), ("clip", WeightClip), ("remap", WeightRemap),
                    ("input_range", InputRange)):
    register_subnode(HWAConfig, _name, _cls)


# ------------------------------------------------------------------------------------------------ presets

def standard_hwa() -> tuple[TileConfig, HWAConfig]:
    """The standard HWA preset of Rasch et al., Nat. Commun. 14, 5282 (2023) (aihwkit
    ``StandardHWATrainingPreset``; training.md §1.5).

    Tiles: ``aimc.presets.standard_hwa()`` (8-bit DAC/ADC, NM constant 1, no BM, out_bound 10, out_noise
    0.04, PCM_READ w_noise 0.0175, IR drop 1.0, columnwise weight scaling to 1.0, max 512 inputs per tile,
    no output split; ideal backward). HWA: channel-wise remapping to 1.0, clip FIXED_VALUE 1.0, learned
    per-column output scales, learned input ranges (init 3.0 from 100 batches of data, α = 3, decay 0.001,
    min percentage 0.95, relative gradient), no weight modifier.
    """
    h = HWAConfig(clip=WeightClip(ClipType.FIXED_VALUE, fixed_value=1.0),
                  remap=WeightRemap(RemapType.CHANNELWISE_SYMMETRIC, 1.0),
                  input_range=InputRange(enable=True), learn_out_scaling=True)
    return _standard_hwa_tile(), h


def ideal() -> tuple[TileConfig, HWAConfig]:
    """Floating-point tiles, no HWA feature: the layer equals its torch.nn twin (a parity baseline)."""
    return _ideal_tile(), HWAConfig()


PRESETS = {"standard-hwa": standard_hwa, "ideal": ideal}


def preset(name: str) -> tuple[TileConfig, HWAConfig]:
    """(TileConfig, HWAConfig) of a named HWA preset: 'standard-hwa' or 'ideal'."""
    try:
        return PRESETS[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown HWA preset {name!r}; available: {sorted(PRESETS)}") from None
