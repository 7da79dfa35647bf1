"""Typed wrapper of the C interval-energy kernel (``_kernel.c``) and its per-meter state.

:class:`KernelState` holds what an incremental run carries between batches as NumPy
arrays indexed by meter index (``mi``): the marks (cut and horizons) and the carried
reads. :func:`kernel_feed` runs one step. The rules are those of the Polars pipelines
in :mod:`agent.energy.core` (the reference the report's ``verify`` re-runs); tests
compare the two on random messy streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

try:
    from agent.energy import _kernel
except ImportError as exc:  # pragma: no cover - an install without its build step
    raise ImportError(
        "agent.energy._kernel (the C interval-energy kernel) is not built: "
        "run `bash scripts/venv.sh` or `pip install -e .` (needs gcc and the Python headers)"
    ) from exc
from agent.energy.config import EnergyConfig
from agent.schemas import IntervalFlag

__all__ = ["FIXED_NONE", "NONE_TS", "KernelState", "MeterArrays", "kernel_feed"]

#: "No time" in the int64 marks (the kernel's null).
NONE_TS = np.iinfo(np.int64).min
#: "No fixed status" in the carried reads.
FIXED_NONE = 255

_F = IntervalFlag
_FLAGS = (
    int(_F.INTERPOLATED),
    int(_F.GAP),
    int(_F.WRAP),
    int(_F.RESET),
    int(_F.REJECTED),
    int(_F.ESTIMATED),
    int(_F.IMPORTED),
)

I64 = npt.NDArray[np.int64]


@dataclass
class KernelState:
    """Marks per meter index and the carried reads (all NumPy, kernel layout)."""

    cut_us: I64
    horizon_energy_us: I64
    horizon_power_us: I64
    mi: npt.NDArray[np.uint32]
    track: npt.NDArray[np.uint8]
    ts: I64
    value: npt.NDArray[np.float64]
    imported: npt.NDArray[np.uint8]
    fixed: npt.NDArray[np.uint8]

    @classmethod
    def empty(cls, n_meters: int) -> KernelState:
        """No marks and no carry for ``n_meters`` meters."""
        none = np.full(n_meters, NONE_TS, dtype=np.int64)
        return cls(
            none,
            none.copy(),
            none.copy(),
            np.empty(0, np.uint32),
            np.empty(0, np.uint8),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            np.empty(0, np.uint8),
            np.empty(0, np.uint8),
        )


@dataclass(frozen=True)
class MeterArrays:
    """The meter attributes the kernel needs, indexed by ``mi``."""

    method: npt.NDArray[np.uint8]  # 0 register, 1 power integration
    rating_kw: npt.NDArray[np.float64]  # NaN: no rating
    modulus_kwh: npt.NDArray[np.float64]  # NaN: no declared register width
    resolution_kwh: npt.NDArray[np.float64]

    @classmethod
    def from_attributes(cls, attributes: pl.DataFrame) -> MeterArrays:
        """From :func:`agent.energy.core.meter_attributes` (collected, sorted by ``mi``)."""

        def floats(name: str) -> npt.NDArray[np.float64]:
            return np.ascontiguousarray(
                attributes[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            )

        return cls(
            np.ascontiguousarray(
                (attributes["method"] == "power_integration").cast(pl.UInt8).to_numpy()
            ),
            floats("rating_kw"),
            floats("modulus_kwh"),
            floats("resolution_kwh"),
        )


def kernel_feed(
    meters: MeterArrays, state: KernelState, fresh: pl.DataFrame, config: EnergyConfig
) -> tuple[pl.DataFrame, KernelState, int]:
    """One incremental step: carried + fresh reads in, final intervals and the new state out.

    Args:
        meters: Meter attributes by ``mi``.
        state: The state after the previous step (not modified).
        fresh: Resolved reads (``mi`` UInt32, ``track`` 0 energy / 1 power as UInt8,
            ``ts`` Int64 µs, ``value`` Float64, ``imported`` UInt8), in arrival order.
        config: The energy options.

    Returns:
        ``(intervals, state, late)``: intervals ``mi, k, energy_kwh, covered_us, flags,
        rejected_readings`` sorted by ``mi, k``; the new state; how many fresh reads were
        late (at or before what their meter had settled) and dropped.
    """
    cut = state.cut_us.copy()
    horizon_e = state.horizon_energy_us.copy()
    horizon_p = state.horizon_power_us.copy()

    def column(name: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
        # Zero-copy for the numeric columns the caller already typed.
        return np.ascontiguousarray(fresh[name].to_numpy(), dtype=dtype)

    out = _kernel.feed(
        meters.method,
        meters.rating_kw,
        meters.modulus_kwh,
        meters.resolution_kwh,
        cut,
        horizon_e,
        horizon_p,
        state.mi,
        state.track,
        state.ts,
        state.value,
        state.imported,
        state.fixed,
        column("mi", np.uint32),
        column("track", np.uint8),
        column("ts", np.int64),
        column("value", np.float64),
        column("imported", np.uint8),
        config.interval_us,
        int(config.max_gap_s * 1e6),
        int(config.max_power_gap_s * 1e6),
        # Computed here exactly as the Polars expressions do (a Python float literal).
        1.0 + config.rating_tolerance,
        config.wrap_max_fraction,
        config.reset_fill == "power",
        _FLAGS,
    )
    mi, k, energy, covered, flags, rejected, c_mi, c_track, c_ts, c_value, c_imp, c_fixed, late = (
        out
    )
    intervals = pl.DataFrame(
        {
            "mi": np.frombuffer(mi, np.uint32),
            "k": np.frombuffer(k, np.int64),
            "energy_kwh": np.frombuffer(energy, np.float64),
            "covered_us": np.frombuffer(covered, np.int64),
            "flags": np.frombuffer(flags, np.uint16),
            "rejected_readings": np.frombuffer(rejected, np.uint32),
        }
    )
    new_state = KernelState(
        cut,
        horizon_e,
        horizon_p,
        np.frombuffer(c_mi, np.uint32),
        np.frombuffer(c_track, np.uint8),
        np.frombuffer(c_ts, np.int64),
        np.frombuffer(c_value, np.float64),
        np.frombuffer(c_imp, np.uint8),
        np.frombuffer(c_fixed, np.uint8),
    )
    return intervals, new_state, late
