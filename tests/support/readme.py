"""The README's code and output blocks, read by section, so the suite runs the README as written."""

import re

from tests.support.paths import README

__all__ = ("readme_blocks", "readme_section")


def readme_section(title: str) -> str:
    """Return the text of the README section ``## title``, up to the next level-2 heading.

    Raises:
        AssertionError: If the README has no such section (a renamed heading must fail its tests, not skip them).

    """
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        msg = f"README.md has no '## {title}' section"
        raise AssertionError(msg)
    return match[1]


def readme_blocks(section: str, lang: str) -> list[str]:
    """Return the fenced ``lang`` blocks of the README section ``## section``, in order.

    Raises:
        AssertionError: If the section has no block of that language.

    """
    pattern = rf"^```{re.escape(lang)}\n(.*?)^```"
    blocks = [str(block) for block in re.findall(pattern, readme_section(section), flags=re.MULTILINE | re.DOTALL)]
    if not blocks:
        msg = f"README.md section '## {section}' has no ```{lang} block"
        raise AssertionError(msg)
    return blocks
