"""`pue-agent import` of hostile files: non-finite values, broken CSV, not UTF-8 (issue 22).

Before: nan, inf, -inf and 1e309 were imported; an unbalanced quote printed 1,218
lines of the file and no line number; invalid UTF-8 gave no line number.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.importer import ImportFileError, load_import_file
from agent.journal import Journal
from tests.paths import ROOT

HEADER = "ts,device,point,quantity,value\n"
#: Every data row carries this marker so a test can tell if the file's content leaked.
SECRETISH = "meter-CONTENT-7f3a"


def _row(i: int, value: str = "1.5") -> str:
    return f"2026-03-01T{i // 4:02d}:{15 * (i % 4):02d}:00+08:00,{SECRETISH},e,energy_kwh,{value}\n"


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309"])
def test_non_finite_values_are_refused_with_the_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "h.csv"
    path.write_text(HEADER + _row(0) + _row(1) + _row(2, value) + _row(3), encoding="utf-8")
    with pytest.raises(ImportFileError) as info:
        load_import_file(path)
    assert "line 4: value is not finite" in str(info.value)
    assert SECRETISH not in str(info.value)


def test_unbalanced_quote_names_the_line_and_never_prints_the_file(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    rows = [_row(i) for i in range(1200)]
    rows[6] = rows[6].replace(SECRETISH, '"' + SECRETISH)  # line 8 opens a quote, never closed
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    with pytest.raises(ImportFileError) as info:
        load_import_file(path)
    message = str(info.value)
    assert "line 8:" in message
    assert SECRETISH not in message
    assert len(message) < 300


def test_a_closed_quote_spanning_lines_and_a_short_row_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(HEADER + _row(0) + '2026-03-01T00:15:00+08:00,"a\nb",e,energy_kwh,1\n')
    with pytest.raises(ImportFileError, match=r"line 3: a quoted field is not closed"):
        load_import_file(path)
    path.write_text(HEADER + _row(0) + _row(1).rsplit(",", 1)[0] + "\n")
    with pytest.raises(ImportFileError, match=r"line 3: 4 fields, the header has 5"):
        load_import_file(path)


def test_invalid_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    body = (HEADER + _row(0) + _row(1)).encode() + _row(2).encode().replace(b"e,", b"\xff,", 1)
    path.write_bytes(body)
    with pytest.raises(ImportFileError) as info:
        load_import_file(path)
    offset = body.index(b"\xff")
    assert f"line 4: not UTF-8 (byte offset {offset})" in str(info.value)


def test_the_cli_prints_the_line_never_the_content(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    rows = [_row(i) for i in range(300)]
    rows[4] = rows[4].replace(SECRETISH, '"' + SECRETISH)
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "agent", "import", str(path), "--state-dir", str(tmp_path / "s")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "line 6:" in output
    assert SECRETISH not in output
    assert "Traceback" not in output
    journal = Journal(tmp_path / "s" / "journal" / "journal.sqlite")
    try:
        assert journal.read(0) == []
    finally:
        journal.close()
