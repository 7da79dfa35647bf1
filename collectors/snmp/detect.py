"""Auto-detection that cannot mis-claim: a profile wins only if what it reads makes physical sense.

Match rules (sysObjectID, present OIDs, equals) only say a profile *might* fit. A
vendor reusing another's enterprise tree, or a sibling model with the same
sysObjectID prefix but a different OID layout (Janitza UMG 604 under the UMG 96
profile: its "current" OID holds a line-to-line voltage), passes match rules and
reads nonsense. So every candidate, best first, is polled once and its readings
checked: it must read something besides the uptime (and each quantity its profile
``requires``), and wherever a group of
points (``output.1.*``, ``l1.*``) has power, voltage and current together, the
power factor they imply, P / (V x I), must be plausible. The first candidate that
passes is chosen; if none does, the device is reported as unmatched, with the
reason each candidate was refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

from agent.readings import ReadingBuffer
from collectors.snmp.client import Session
from collectors.snmp.poller import DevicePlan, Poller, detect
from collectors.snmp.profiles import DeviceFacts, Profile, matching_quirks, rank_profiles

__all__ = [
    "MIN_APPARENT_VA",
    "MIN_APPARENT_VA_LOW_PF",
    "PF_MAX",
    "PF_MIN",
    "Detection",
    "detect_plan",
    "implausible",
]

#: Lowest P / (V x I) accepted. Real loads sit above ~0.5; a reading ten times too small
#: (0.1 V read as V, mA read as A x 10) lands below 0.1 and is refused.
PF_MIN = 0.1
#: Highest P / (V x I) accepted: sqrt(3) = 1.73 (a phase-to-phase load's power against a
#: phase-to-neutral voltage and its line current), plus rounding of coarse registers. A
#: slip of 10 or more (the Janitza case reads 48) stays far above it.
PF_MAX = 1.8
#: Below this V x I the check says nothing: an idle outlet's 0.1 A rounds too coarsely.
MIN_APPARENT_VA = 100.0
#: The low-power-factor bound applies from this V x I up: a lightly loaded circuit can draw
#: mostly reactive current (E3meter node 17411: 15 W at 229.56 V x 0.963 A = 221 VA, PF 0.07),
#: but 500 VA at PF < 0.1 is a unit slip, not a load.
MIN_APPARENT_VA_LOW_PF = 500.0


def implausible(readings: pl.DataFrame) -> list[str]:
    """Problems in one poll's readings: groups whose P / (V x I) is not a power factor.

    Points are grouped by their name without the last part (``output.1.power`` and
    ``output.1.voltage`` are one group). A group is checked only when it has exactly one
    reading each of ``power_w``, ``voltage_v`` and ``current_a``, P > 0 and V x I of at
    least :data:`MIN_APPARENT_VA` (:data:`MIN_APPARENT_VA_LOW_PF` for the lower bound).
    """
    groups: dict[str, dict[str, list[float]]] = {}
    for point, quantity, value in readings.select("point", "quantity", "value").iter_rows():
        if quantity not in ("power_w", "voltage_v", "current_a"):
            continue
        group = point.rsplit(".", 1)[0] if "." in point else ""
        groups.setdefault(group, {}).setdefault(quantity, []).append(value)
    problems = []
    for group, found in sorted(groups.items()):
        if any(len(found.get(q, [])) != 1 for q in ("power_w", "voltage_v", "current_a")):
            continue
        power_w = found["power_w"][0]
        apparent_va = found["voltage_v"][0] * found["current_a"][0]
        if power_w <= 0 or apparent_va < MIN_APPARENT_VA:
            continue
        pf = power_w / apparent_va
        too_low = pf < PF_MIN and apparent_va >= MIN_APPARENT_VA_LOW_PF
        if too_low or pf > PF_MAX:
            problems.append(
                f"{group or 'device'}: P {power_w:g} W against V x I "
                f"{found['voltage_v'][0]:g} V x {found['current_a'][0]:g} A = {apparent_va:g} VA "
                f"is a power factor of {pf:.3g} (plausible {PF_MIN:g}..{PF_MAX:g})"
            )
    return problems


@dataclass
class Detection:
    """Outcome of auto-detection: the plan chosen (or none) and why others were refused."""

    facts: DeviceFacts
    plan: DevicePlan | None = None
    #: Profile name -> why it was refused (matched the rules, but read nothing or nonsense).
    refused: dict[str, str] = field(default_factory=dict)
    #: The chosen plan's trial poll (a reading batch; empty if none was chosen).
    readings: pl.DataFrame = field(default_factory=pl.DataFrame)

    def explain(self) -> str:
        """One line: the candidates refused and why (empty if none was)."""
        return "; ".join(f"{name}: {why}" for name, why in self.refused.items())


async def detect_plan(
    session: Session, profiles: Iterable[Profile], *, max_oids_per_pdu: int = 40
) -> Detection:
    """Pick the best matching profile whose one trial poll reads plausible values.

    Raises:
        collectors.snmp.client.SnmpError: when the device does not answer detection.
    """
    candidates = list(profiles)
    facts = await detect(session, candidates)
    result = Detection(facts)
    for profile in rank_profiles(candidates, facts):
        plan = DevicePlan(
            profile, matching_quirks(profile, facts), max_oids_per_pdu=max_oids_per_pdu
        )
        buffer = ReadingBuffer()
        await Poller(session.label, session, plan).poll(buffer)
        batch = buffer.take()
        readings = batch.filter(pl.col("point") != "sys.uptime")
        if readings.is_empty():
            result.refused[plan.describe()] = "its OIDs exist but give no reading"
            continue
        quantities = set(readings["quantity"].to_list())
        lacking = [q for q in profile.requires if q not in quantities]
        if lacking:
            # A generic table answered, but not with what the profile is for (an
            # ENTITY-SENSOR-MIB with temperatures only is no power source).
            result.refused[plan.describe()] = f"reads no {', '.join(lacking)}"
            continue
        problems = implausible(readings)
        if problems:
            result.refused[plan.describe()] = "; ".join(problems)
            continue
        result.plan = plan
        result.readings = batch
        break
    return result
