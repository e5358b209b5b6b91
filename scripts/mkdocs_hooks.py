"""MkDocs hook (mkdocs.yml, ``hooks:``): tidy the API pages rendered from free-form docstrings.

The docstrings are rendered as Markdown (``docstring_style: null``), so a Sphinx role such as
:func:`sample` would show its ``:func:`` prefix in front of the code span. This hook removes
the prefix and keeps the code span. It only rewrites the rendered HTML of pages, never a source file.
"""
from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|ref):(?=<code>)")


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub("", html)
