"""The documentation: it builds with warnings as errors, and every citation in a docstring
resolves inside the repository (docs/methods.md: its paper key, sections and equations)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "energyvae"
METHODS = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
ANCHORS = set(re.findall(r"\{:? ?#([a-z0-9-]+) ?\}", METHODS))
SOURCES = {p: p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def _mkdocs():
    exe = Path(sys.executable).with_name("mkdocs")
    return str(exe) if exe.exists() else shutil.which("mkdocs")


@pytest.mark.slow
@pytest.mark.skipif(_mkdocs() is None, reason="mkdocs not installed (pip install -e '.[docs]')")
def test_docs_build_with_warnings_as_errors(tmp_path):
    res = subprocess.run([_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "site" / "methods" / "index.html").is_file()


def test_the_paper_key_has_every_paper():
    for anchor in ("paper-key", "paper-000", "paper-001", "paper-002", "paper-003", "ncp-vae", "dt-vae"):
        assert anchor in ANCHORS, anchor


def test_every_methods_citation_resolves():
    missing = []
    for path, text in SOURCES.items():
        for m in re.finditer(r"docs/methods\.md(?:``)?(?P<rest>[^\n]{0,40})", text):
            rest = m["rest"]
            sec = re.match(r",? ?§(\d)", rest)
            eq = re.match(r",? ?Eqs?\. (\d+(?:\.\d+)?)", rest)
            if sec and f"section-{sec[1]}" not in ANCHORS:
                missing.append(f"{path.name}: §{sec[1]}")
            if eq and f"eq-{eq[1].replace('.', '-')}" not in ANCHORS:
                missing.append(f"{path.name}: Eq. {eq[1]}")
            quoted = re.match(r'[^"\n]*"([^"]+)"', rest)
            if quoted and quoted[1] not in METHODS:
                missing.append(f"{path.name}: {quoted[1]!r}")
    assert not missing, missing


def test_paper_keys_cited_in_docstrings_exist():
    keys = set()
    for text in SOURCES.values():
        keys |= set(re.findall(r"[Pp]aper (\d{3})\b", text))
    assert keys and all(f"paper-{k}" in ANCHORS for k in keys), keys


def test_no_docstring_cites_outside_the_repository():
    bad = []
    for path, text in SOURCES.items():
        for pattern in (r"(?<![\w/])METHODS\.md", r"\bissue #?\d+", r"\bissues? \d+\b"):
            bad += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not bad, bad
