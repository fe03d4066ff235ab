"""Reports as JSON, Markdown and JUnit XML (for CI test views); all written atomically.

JSON has no inf or NaN, so they are written as the strings "inf", "-inf" and "nan";
``from_json`` turns those strings back into floats.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgegate.atomic import atomic_write

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def to_plain(obj: Any) -> Any:
    """Dataclasses, numpy and paths -> JSON-able Python; objects with ``to_dict`` use it."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, type):
        return to_plain(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((to_plain(v) for v in obj), key=repr)
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if isinstance(obj, np.generic):
        return to_plain(obj.item())
    if isinstance(obj, bool) or obj is None or isinstance(obj, int | str):
        return obj
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return str(obj)  # a report must still be written; the repr says what it was


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(to_plain(obj), indent=indent, allow_nan=False)


def from_json(text: str) -> Any:
    """Parse a report, turning "inf"/"-inf"/"nan" strings back into floats."""

    def restore(value: Any) -> Any:
        if isinstance(value, str) and value in _NONFINITE:
            return _NONFINITE[value]
        if isinstance(value, list):
            return [restore(v) for v in value]
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        return value

    return restore(json.loads(text))


def write_json(path: str | Path, obj: Any) -> Path:
    text = to_json(obj)  # before opening: a failure leaves no file behind
    with atomic_write(path, "w") as fh:
        fh.write(text + "\n")
    return Path(path)


@dataclasses.dataclass
class Table:
    """A Markdown table with a header row; cells are formatted by ``_cell``."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


Section = tuple[str, "Table | Sequence[Sequence[Any]] | str"]


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        value = float(value)
        text = str(_float(value)) if not math.isfinite(value) else f"{value:.6g}"
    else:
        text = str(to_plain(value)) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = [_cell(v) for v in row] + [""] * (len(columns) - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(title: str, sections: Sequence[Section]) -> str:
    """Each section is (heading, body): a Table, rows of (key, value, ...) or a paragraph."""
    lines = [f"# {title}", ""]
    for heading, body in sections:
        lines += [f"## {heading}", ""]
        if isinstance(body, str):
            lines.append(body)
        elif isinstance(body, Table):
            lines += _table(body.columns, body.rows)
        else:
            rows = [tuple(r) for r in body]
            width = max((len(r) for r in rows), default=2)
            lines += _table(["", ""] + [""] * (width - 2), rows)
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: str | Path, title: str, sections: Sequence[Section]) -> Path:
    text = markdown(title, sections)
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def parity_cases(result: Mapping[str, Any]) -> list[tuple[str, bool, str, float]]:
    """One JUnit case per output, plus one for failures no output owns (e.g. missing ones)."""
    failures = list(result.get("failures", []))
    outputs = list(result.get("outputs", {}))
    cases = []
    for name in outputs:
        reasons = [f for f in failures if f.startswith(f"output '{name}'")]
        cases.append((f"parity[{name}]", not reasons, "; ".join(reasons), 0.0))
    other = [f for f in failures if not any(f.startswith(f"output '{n}'") for n in outputs)]
    if other or not outputs:
        cases.append(("parity[outputs]", not other, "; ".join(other), 0.0))
    return cases


# XML 1.0 cannot hold most control characters, even escaped: drop them.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return _XML_BAD.sub("", str(text))


def write_junit(
    path: str | Path, suite_name: str, cases: Sequence[tuple[str, bool, str, float]]
) -> Path:
    """JUnit XML as CI systems read it: <testsuites><testsuite tests= failures=>...

    Each case is (name, passed, message, seconds); a failed case carries a <failure>
    whose message attribute is the first line and whose text is the whole message.
    """
    failures = sum(1 for _, ok, _, _ in cases if not ok)
    total_time = sum(float(t) for *_, t in cases)
    root = ET.Element(
        "testsuites",
        name=_xml_text(suite_name),
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        time=f"{total_time:.3f}",
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_xml_text(suite_name),
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{total_time:.3f}",
    )
    for name, ok, message, seconds in cases:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_xml_text(suite_name),
            name=_xml_text(name),
            time=f"{float(seconds):.3f}",
        )
        if not ok:
            text = _xml_text(message) or "failed"
            failure = ET.SubElement(
                case, "failure", message=text.splitlines()[0], type="ValidationFailed"
            )
            failure.text = text
    ET.indent(root)
    with atomic_write(path, "wb") as fh:
        ET.ElementTree(root).write(fh, encoding="utf-8", xml_declaration=True)
    return Path(path)
