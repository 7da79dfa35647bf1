# The C extension built from _kernel.c (agent/energy/kernel.py is the typed wrapper).
from typing import Any

import numpy.typing as npt

_Array = npt.NDArray[Any]

# Returned: interval columns (mi, k, energy, covered, flags, rejected) and carry columns
# (mi, track, ts, value, imported, fixed) as raw bytes, then the number of late reads.

def feed(
    method: _Array,
    rating: _Array,
    modulus: _Array,
    resolution: _Array,
    cut: _Array,
    horizon_energy: _Array,
    horizon_power: _Array,
    carry_mi: _Array,
    carry_track: _Array,
    carry_ts: _Array,
    carry_value: _Array,
    carry_imported: _Array,
    carry_fixed: _Array,
    mi: _Array,
    track: _Array,
    ts: _Array,
    value: _Array,
    imported: _Array,
    interval_us: int,
    max_gap_us: int,
    max_power_gap_us: int,
    tol1: float,
    wrap_frac: float,
    reset_fill: bool,
    flags: tuple[int, int, int, int, int, int, int],
    /,
) -> tuple[
    bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, int
]: ...
