"""The README's reference tables, generated from the code so they cannot drift.

``.venv/bin/python -m collectors.mqtt.reference`` rewrites the generated sections of
``collectors/mqtt/README.md`` (between ``<!-- generated: NAME -->`` and
``<!-- end generated -->``); ``tests/mqtt/test_suggest.py`` fails when they differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from agent.readings import QUANTITIES
from collectors.mqtt.mapping import FieldMap, Mapping, Rule

__all__ = ["README", "keys_table", "quantity_table", "regenerate", "sections"]

README = Path(__file__).with_name("README.md")

_SECTION = re.compile(
    r"(<!-- generated: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)


def quantity_table() -> str:
    """The closed list of quantities (``agent.readings.QUANTITIES``) as a Markdown table."""
    rows = ["| quantity | what, unit |", "|---|---|"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in QUANTITIES.items()]
    return "\n".join(rows) + "\n"


def _default(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.is_required():
        return "required"
    default = info.default
    if default is PydanticUndefined or default is None:
        return "none"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, str):
        return f'`"{default}"`'
    return f"`{default!r}`"


def keys_table() -> str:
    """Every mapping key (file, rule, field) with its default and meaning, from the models."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for prefix, model in (("", Mapping), ("rules.", Rule), ("rules.fields.", FieldMap)):
        for name, info in model.model_fields.items():
            meaning = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {_default(model, name)} | {meaning} |")
    return "\n".join(rows) + "\n"


def sections() -> dict[str, str]:
    """Generated section name -> its Markdown."""
    return {"quantities": quantity_table(), "mapping_keys": keys_table()}


def regenerate(text: str) -> str:
    """``text`` with every generated section replaced by what the code generates now."""
    generated = sections()

    def body(match: re.Match[str]) -> str:
        name = match.group("name")
        return match.group(1) + generated.get(name, match.group("body")) + match.group(4)

    return _SECTION.sub(body, text)


def main() -> None:
    """Rewrite the README's generated sections in place."""
    text = README.read_text(encoding="utf-8")
    new = regenerate(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"{README}: generated sections updated", file=sys.stderr)


if __name__ == "__main__":
    main()
