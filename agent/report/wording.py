# ruff: noqa: E501 - wording tables: long sentences read better unbroken
"""Findings and declared facts in words, in each report language (nothing raw shown).

The rules engine's ``explanation`` is English; the report words each finding itself from
its structured fields (result, measured value, threshold, first month, benefit, early
warning) and the policy pack, so the Chinese report is Chinese throughout and the two
languages state the same facts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.report.i18n import Lang
from agent.site import Site
from rules import Pack, Rule, claim_state

__all__ = [
    "FindingView",
    "fact_value",
    "facts_in_words",
    "view_finding",
]

_METRICS: dict[Lang, dict[str, str]] = {
    "zh": {
        "pue": "PUE",
        "ref": "绿色电力占比（REF）",
        "carbon_traceability": "碳排放可溯源率",
        "rack_occupancy": "机架上架率",
        "cue": "碳利用效率（CUE）",
        "flexible_load_share": "柔性负荷占比",
        "latency_city_ms": "市内网络时延",
        "latency_region_ms": "区域网络时延",
        "latency_hub_ms": "至枢纽网络时延",
        "e_dc_kwh": "数据中心总耗电量",
    },
    "en": {
        "pue": "PUE",
        "ref": "green share (REF)",
        "carbon_traceability": "carbon traceability rate",
        "rack_occupancy": "rack occupancy",
        "cue": "CUE",
        "flexible_load_share": "flexible load share",
        "latency_city_ms": "in-city network latency",
        "latency_region_ms": "regional network latency",
        "latency_hub_ms": "latency to the hub",
        "e_dc_kwh": "facility energy",
    },
}
_WINDOWS = {
    "zh": {"ttm": "年度（近十二个月）", "month": "本月"},
    "en": {"ttm": "annual (TTM)", "month": "monthly"},
}
_COMPARE = {
    "zh": {"<": "低于", "<=": "不高于", ">": "高于", ">=": "不低于"},
    "en": {"<": "below", "<=": "at most", ">": "above", ">=": "at least"},
}
_PERCENT_METRICS = frozenset(
    {"ref", "carbon_traceability", "rack_occupancy", "flexible_load_share"}
)
_UNITS = {"latency_city_ms": " ms", "latency_region_ms": " ms", "latency_hub_ms": " ms"}

_POLICY_STATUS = {
    "zh": {
        "in_force": "现行有效",
        "expired": "已失效",
        "not_yet": "尚未生效",
        "draft": "征求意见稿",
    },
    "en": {
        "in_force": "in force",
        "expired": "expired",
        "not_yet": "not yet in force",
        "draft": "draft",
    },
}
_PROJECT_TYPES = {
    "zh": {
        "new": "新建",
        "expansion": "扩建",
        "retrofit": "改造升级",
        "existing": "存量（未改造）",
    },
    "en": {
        "new": "new build",
        "expansion": "expansion",
        "retrofit": "retrofit",
        "existing": "existing (not retrofitted)",
    },
}
_FACT_NAMES = {
    "zh": {
        "racks": "机架数",
        "compute_share_pct": "计算功能占比",
        "province": "省份",
        "project_type": "项目类型",
        "equipment_purchase_cny": "设备购置金额",
        "policies": "适用政策",
    },
    "en": {
        "racks": "racks",
        "compute_share_pct": "compute function share",
        "province": "province",
        "project_type": "project type",
        "equipment_purchase_cny": "equipment purchase price",
        "policies": "policies",
    },
}
#: Province names as declared (English or pinyin) in Chinese.
_PROVINCES_ZH = {
    "shanxi": "山西",
    "qinghai": "青海",
    "ningxia": "宁夏",
    "xinjiang": "新疆",
    "inner mongolia": "内蒙古",
    "guizhou": "贵州",
    "gansu": "甘肃",
    "hebei": "河北",
    "beijing": "北京",
    "shanghai": "上海",
    "guangdong": "广东",
    "sichuan": "四川",
    "chongqing": "重庆",
    "anhui": "安徽",
    "yinchuan": "银川",
    "shihezi": "石河子",
}
_HAN = re.compile(r"[\u4e00-\u9fff]")


def fact_value(name: str, value: Any, lang: Lang) -> str:
    """One declared fact's value in words (``retrofit`` -> 改造升级, ``Shanxi`` -> 山西)."""
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if name == "project_type":
        return _PROJECT_TYPES[lang].get(str(value), str(value))
    if name == "province" and lang == "zh":
        return _PROVINCES_ZH.get(str(value).strip().casefold(), str(value))
    if name == "compute_share_pct":
        return f"{float(value):g} %"
    if name == "equipment_purchase_cny":
        return f"{float(value):,.0f} 元" if lang == "zh" else f"{float(value):,.0f} CNY"
    if name == "racks":
        return f"{int(value):,}"
    if isinstance(value, list):
        return "、".join(map(str, value)) if lang == "zh" else ", ".join(map(str, value))
    return str(value)


def facts_in_words(raw: Mapping[str, Any], lang: Lang) -> str:
    """Declared facts as ``name: value`` words, joined."""
    names = _FACT_NAMES[lang]
    parts = [
        f"{names.get(k, k)}：{fact_value(k, v, lang)}"
        if lang == "zh"
        else f"{names.get(k, k)}: {fact_value(k, v, lang)}"
        for k, v in raw.items()
    ]
    return "；".join(parts) if lang == "zh" else "; ".join(parts)


def _value(metric: str | None, value: float | None) -> str:
    if value is None:
        return "—"
    if metric in _PERCENT_METRICS:
        return f"{value * 100:.1f}\u00a0%"
    if metric == "e_dc_kwh":
        return f"{value:,.1f} kWh"
    return f"{value:.4g}{_UNITS.get(metric or '', '')}"


def _money(amount: float, lang: Lang) -> str:
    return f"{amount:,.0f}"


@dataclass(frozen=True, slots=True)
class FindingView:
    """One finding as the report shows it."""

    rule_id: str
    document: str
    policy: str  # the document's title in the report language
    clause_ref: str
    title: str  # the clause (zh: verbatim) or its English title
    jurisdiction: str
    policy_status: str
    advisory: bool
    measured: str
    test: str
    coverage: str
    result: str  # eligible | not_eligible | insufficient_data | not_applicable
    status: str  # the result in words, with the claim state and early warning
    status_class: str
    benefit: str
    explanation: str
    facts: str
    #: Why a not-applicable finding does not concern this site (None: it does).
    outside: str | None
    warning: bool
    warning_text: str


#: A remark in parentheses with no Chinese in it ("(number unconfirmed)").
_LATIN_REMARK = re.compile(r"\s*\([^()\u4e00-\u9fff]*\)")


def _document(document: str, lang: Lang) -> str:
    """The document number; in Chinese without the packs' English remarks."""
    if lang != "zh":
        return document
    cleaned = _LATIN_REMARK.sub("", document).strip()
    return cleaned if _HAN.search(cleaned) else document


def _jurisdiction(finding: Mapping[str, Any], pack: Pack | None, lang: Lang) -> str:
    """Where the document applies; in Chinese from the pack's Chinese place names."""
    raw = str(finding["jurisdiction"] or "")
    if lang != "zh" or pack is None:
        return raw
    if "China" in raw:
        return "全国（国家枢纽节点）"
    names = [a for a in pack.provinces if _HAN.search(a)]
    if not names:
        return raw
    # Province first, then the city or park when the pack names one (青海·海东).
    shown = [names[0]]
    last = names[-1]
    if last not in shown and not last.startswith(names[0]) and last != "兵团":
        shown.append(last)
    return "·".join(shown)


def _outside(finding: Mapping[str, Any], pack: Pack | None, site: Site, lang: Lang) -> str | None:
    """Why a ``not_applicable`` finding does not concern the site, or None."""
    if finding["result"] != "not_applicable":
        return None
    status = finding["policy_status"]
    zh = lang == "zh"
    if status == "expired":
        return "政策已失效" if zh else "the policy has expired"
    if status == "not_yet":
        return "政策尚未生效" if zh else "the policy is not yet in force"
    facts = site.facts
    if pack is not None and facts.policies and pack.id not in facts.policies:
        return "不在站点申报的适用政策之内" if zh else "not among the site's declared policies"
    if pack is not None and pack.provinces and facts.province:
        wanted = facts.province.strip().casefold()
        if not any(a.casefold() == wanted for a in pack.provinces):
            if zh:
                where = _jurisdiction(finding, pack, "zh")
                return (
                    f"站点申报在{fact_value('province', facts.province, 'zh')}，该文件适用于{where}"
                )
            return (
                f"the site is declared in {facts.province}; the document covers {pack.jurisdiction}"
            )
    if finding["rule_kind"] == "report":
        return None
    return "申报信息不满足条款的适用条件" if zh else "ruled out by the site's declared facts"


def _status(finding: Mapping[str, Any], paid: str | None, lang: Lang) -> str:
    zh = lang == "zh"
    result = finding["result"]
    words = {
        "zh": {
            "eligible": "符合",
            "not_eligible": "不符合",
            "insufficient_data": "数据不足",
            "not_applicable": "不适用",
        },
        "en": {
            "eligible": "eligible",
            "not_eligible": "not eligible",
            "insufficient_data": "insufficient data",
            "not_applicable": "not applicable",
        },
    }[lang]
    if finding["rule_kind"] == "report" and result == "not_applicable":
        text = "报告值（条款未设阈值）" if zh else "reported figure (no threshold)"
    else:
        text = words.get(result, result)
    claim = claim_state(finding, paid)
    if claim is not None:
        state, month = claim
        if state == "claim":
            text = (
                f"符合 — 一次性申领，首次达标 {month}"
                if zh
                else f"eligible — claim once, first met {month}"
            )
            if paid == "annual":
                text = (
                    f"符合 — {month[:4]} 年度申领一次，首次达标 {month}"
                    if zh
                    else f"eligible — claim once for {month[:4]}, first met {month}"
                )
        else:
            text = (
                f"已达标，自 {month} 起可申领（不重复计）"
                if zh
                else f"met, already claimable since {month}"
            )
    if finding["warning"]:
        text += " · 预警" if zh else " · early warning"
    return text


def _warning(finding: Mapping[str, Any], lang: Lang) -> str:
    kinds = set((finding["warning"] or "").split(","))
    if not kinds - {""}:
        return ""
    if lang == "en":
        return f"Early warning: {finding['warning_detail']}"
    parts = []
    if "margin" in kinds:
        parts.append(f"实测值距阈值 {finding['threshold']:g} 已很接近")
    if "trend" in kinds:
        month = re.search(r"by (\d{4}-\d{2})", finding["warning_detail"] or "")
        parts.append(
            f"按近期趋势，预计 {month.group(1)} 前将不再达标"
            if month
            else "按近期趋势，预计将不再达标"
        )
    return "预警：" + "；".join(parts) + "。"


def _benefit_text(
    finding: Mapping[str, Any], rule: Rule | None, paid: str | None, lang: Lang
) -> tuple[str, str]:
    """(table cell, sentence) for the finding's benefit."""
    zh = lang == "zh"
    amount = finding["benefit_cny"]
    claim = claim_state(finding, paid)
    if claim is not None and claim[0] == "claimable_since":
        cell = f"已于 {claim[1]} 计列" if zh else f"stated in {claim[1]}"
        sentence = (
            f"一次性补贴已在 {claim[1]} 的评估中计列，本月不重复计算。"
            if zh
            else f"The one-time benefit is stated in the {claim[1]} finding and not counted again."
        )
        return cell, sentence
    if amount is None or rule is None or rule.benefit is None:
        return "—", ""
    upper = rule.benefit.upto
    cell = (
        (f"最高 {_money(amount, lang)}" if zh else f"up to {_money(amount, lang)}")
        if upper
        else _money(amount, lang)
    )
    how = {
        "once": ("一次性", "one-time"),
        "annual": ("每年一次", "once a year"),
        "per_period": ("按月", "per month"),
    }[rule.benefit.paid]
    if zh:
        sentence = f"预估补贴（{how[0]}）：{'最高 ' if upper else ''}{_money(amount, lang)} 元，依据：{rule.benefit.clause}。"
    else:
        sentence = f"Estimated benefit ({how[1]}): {'up to ' if upper else ''}{_money(amount, lang)} CNY, per the clause: {rule.benefit.clause}."
    return cell, sentence


def view_finding(
    finding: Mapping[str, Any],
    pack: Pack | None,
    rule: Rule | None,
    site: Site,
    lang: Lang,
    paid: str | None = None,
) -> FindingView:
    """A finding in the report's words."""
    zh = lang == "zh"
    metric, window = finding["metric"], finding["window"]
    metric_word = _METRICS[lang].get(metric or "", metric or "")
    window_word = _WINDOWS[lang].get(window or "", window or "")
    result = str(finding["result"])
    measured_value = finding["measured_value"]
    measured = "—" if measured_value is None else _value(metric, measured_value)
    comparator, threshold = finding["comparator"], finding["threshold"]
    test = (
        f"{_COMPARE[lang][comparator]} {_value(metric, threshold)}"
        if comparator is not None and threshold is not None
        else "—"
    )
    sentences: list[str] = []
    if (
        result in ("eligible", "not_eligible")
        and measured_value is not None
        and threshold is not None
    ):
        met = result == "eligible"
        if zh:
            sentences.append(
                f"{window_word}{metric_word}实测 {measured}，{'满足' if met else '未满足'}“{_COMPARE['zh'][comparator]} {_value(metric, threshold)}”。"
            )
        else:
            sentences.append(
                f"Measured {window_word} {metric_word} {measured}: {_COMPARE['en'][comparator]} {_value(metric, threshold)} is {'met' if met else 'not met'}."
            )
    elif result == "insufficient_data":
        if finding["rule_kind"] == "declaration":
            sentences.append(
                "该条款取决于计量与站点申报之外的事项（如审批、平台接入），本系统无法判定；列出以示完整。"
                if zh
                else f"Decided by {rule.declaration if rule and rule.declaration else 'matters outside the meters'}: not something the agent can measure; listed so every clause is visible."
            )
        else:
            missing = [
                n
                for n in (rule.needed_facts() if rule else [])
                if getattr(site.facts, n, None) is None
            ]
            if missing:
                names = _FACT_NAMES[lang]
                listed = ("、" if zh else ", ").join(names.get(n, n) for n in missing)
                sentences.append(
                    f"站点模型缺少所需的申报信息：{listed}。"
                    if zh
                    else f"Needs declared facts missing from the site model: {listed}."
                )
            else:
                coverage = finding["coverage"]
                cover = (
                    ""
                    if coverage is None
                    else (
                        f"（数据覆盖率 {coverage * 100:.1f} %）"
                        if zh
                        else f" (data coverage {coverage * 100:.1f} %)"
                    )
                )
                sentences.append(
                    f"{window_word}{metric_word}数据不足{cover}，不给出结论。"
                    if zh
                    else f"No usable {window_word} {metric_word}{cover}: no result is given."
                )
    elif finding["rule_kind"] == "report" and measured_value is not None:
        sentences.append(
            f"条款要求报告该数值，未设阈值：{window_word}{metric_word} {measured}。"
            if zh
            else f"The clause asks for the figure and sets no threshold: {window_word} {metric_word} {measured}."
        )
    first = finding["first_met_period"]
    claim = claim_state(finding, paid)
    if first and claim is None and rule is not None and rule.first_time:
        sentences.append(f"首次达标月份：{first}。" if zh else f"First met in {first}.")
    cell, benefit_sentence = _benefit_text(finding, rule, paid, lang)
    if benefit_sentence:
        sentences.append(benefit_sentence)
    warning = _warning(finding, lang)
    if warning:
        sentences.append(warning)
    if finding["advisory"]:
        sentences.append(
            "参考性结论（规划目标或征求意见稿，非补贴条件）。"
            if zh
            else "Advisory: a plan target or a draft, not a subsidy condition."
        )
    if not zh and rule is not None and rule.note:
        sentences.append(f"Reading: {rule.note}")
    used: dict[str, Any] = {}
    if finding["facts_used"]:
        try:
            used = dict(json.loads(finding["facts_used"]))
        except ValueError:
            used = {}
    coverage = finding["coverage"]
    status_class = {"eligible": "ok", "not_eligible": "bad"}.get(result, "note")
    return FindingView(
        rule_id=str(finding["rule_id"]),
        document=_document(str(finding["document"] or ""), lang),
        policy=(pack.title_zh if zh else pack.title_en) if pack is not None else "",
        clause_ref=rule.clause_ref if rule is not None else "",
        title=(rule.clause if zh else rule.title_en)
        if rule is not None
        else str(finding["clause"] or ""),
        jurisdiction=_jurisdiction(finding, pack, lang),
        policy_status=_POLICY_STATUS[lang].get(
            str(finding["policy_status"]), str(finding["policy_status"])
        ),
        advisory=bool(finding["advisory"]),
        measured=measured,
        test=test,
        coverage="—" if coverage is None else f"{coverage * 100:.1f}\u00a0%",
        result=result,
        status=_status(finding, paid, lang),
        status_class=status_class,
        benefit=cell,
        explanation=" ".join(sentences),
        facts=facts_in_words(used, lang),
        outside=_outside(finding, pack, site, lang),
        warning=bool(finding["warning"]),
        warning_text=warning,
    )
