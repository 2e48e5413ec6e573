"""mkdocs hook: drop Sphinx role prefixes (``:func:``, ``:meth:``, ...) from rendered pages.

Some docstrings write cross-references the Sphinx way (``:func:`pretrained```), which
mkdocstrings renders as the literal text ``:func:`` before the code span. This hook removes the
prefix and keeps the code span, so the reference reads as plain code.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|meth|class|attr|mod|data|obj|exc):(?=<code)")


def on_page_content(html: str, **kwargs) -> str:
    """Returns the page's HTML without Sphinx role prefixes before code spans."""
    return _ROLE.sub("", html)
