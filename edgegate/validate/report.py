"""Reports as JSON, Markdown and JUnit XML (for CI test views); all written atomically."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgegate.atomic import atomic_write
from edgegate.jsonio import to_json, write_json

__all__ = ["parity_cases", "to_json", "write_json", "write_junit", "write_markdown"]


def write_markdown(
    path: str | Path, title: str, sections: list[tuple[str, list[tuple[str, str]]]]
) -> Path:
    lines = [f"# {title}", ""]
    for heading, rows in sections:
        lines += [f"## {heading}", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        lines.append("")
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(lines))
    return Path(path)


def parity_cases(result: dict[str, Any]) -> list[tuple[str, bool, str, float]]:
    """One JUnit case per output, plus agreement cases; failures carry their reason."""
    failures = result.get("failures", [])
    cases = []
    for name in result.get("outputs", {}):
        reasons = [f for f in failures if f.startswith(f"output '{name}'")]
        cases.append((f"parity[{name}]", not reasons, "; ".join(reasons), 0.0))
    other = [
        f for f in failures if not any(f.startswith(f"output '{n}'") for n in result["outputs"])
    ]
    if other:
        cases.append(("parity[outputs]", False, "; ".join(other), 0.0))
    return cases


def write_junit(
    path: str | Path, suite_name: str, cases: list[tuple[str, bool, str, float]]
) -> Path:
    failures = sum(1 for _, ok, _, _ in cases if not ok)
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        time=f"{sum(t for *_, t in cases):.3f}",
    )
    for name, ok, message, seconds in cases:
        case = ET.SubElement(
            suite, "testcase", classname=suite_name, name=name, time=f"{seconds:.3f}"
        )
        if not ok:
            ET.SubElement(case, "failure", message=message).text = message
    root = ET.Element("testsuites")
    root.append(suite)
    with atomic_write(path, "wb") as fh:
        ET.ElementTree(root).write(fh, encoding="utf-8", xml_declaration=True)
    return Path(path)
