"""The committed results pages: each ``docs/<page>/**/table6.json`` or ``compare.json`` is rebuilt, every table,
by the ``--no-train`` command its page ``docs/<page>.md`` gives; every interval and mean ± std that README.md and
docs/ quote is in one of them (or on a page that names the earlier code it came from)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from pix2pix_ilm.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"
SAVED = sorted([*DOCS.glob("*/**/table6.json"), *DOCS.glob("*/**/compare.json")])


@pytest.mark.parametrize("saved", SAVED, ids=[str(p.parent.relative_to(DOCS)) for p in SAVED])
def test_a_results_page_is_rebuilt_by_its_command(saved, facades_dir, lpips_backbone, tmp_path, capsys):
    summary = json.loads(saved.read_text())
    page = re.sub(r"\s*\\\n\s*", " ", (DOCS / f"{saved.relative_to(DOCS).parts[0]}.md").read_text())
    assert summary["command"] in page  # the page gives the command that wrote the committed scores
    swap = {"--out": tmp_path / "out", "--dataroot": facades_dir, "--lpips-backbone": lpips_backbone}
    args = shlex.split(summary["command"])[1:]
    args = [str(swap[args[i - 1]]) if args[i - 1] in swap else a for i, a in enumerate(args)]
    (tmp_path / "out").mkdir()
    shutil.copy(saved, tmp_path / "out")
    assert main(args) == 0
    rebuilt = json.loads((tmp_path / "out" / saved.name).read_text())
    assert rebuilt["missing"] == [] and len(rebuilt["runs"]) == len(summary["runs"])
    assert rebuilt["tables"] == summary["tables"]
    assert rebuilt.get("epoch_tables") == summary.get("epoch_tables", {})
    assert "Wall time" in capsys.readouterr().out


# -- every interval and mean ± std that README.md and docs/ quote is in a committed JSON of scores -----------
NUMBER = r"[+−-]?\d+\.\d+"
QUOTE = re.compile(rf"(?:({NUMBER})\**\s+)?\[({NUMBER}), ({NUMBER})\]|({NUMBER}) ± ({NUMBER})")
# A page whose numbers were made by earlier code, with no committed JSON of scores, says so in a quote block that
# names the commits and the option: "> Earlier code: ... `<commit>` ... `--<option> <value>` ...".
EARLIER = re.compile(r"^> Earlier code:.*`[0-9a-f]{7,40}`.*`--[a-z-]+ [^`]+`", re.M)
PAGES = [DOCS.parent / "README.md", *sorted(DOCS.rglob("*.md"))]


def _committed_values() -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
    """(mean, low, high) of every interval and (mean, std) of every statistic in the committed JSON files."""
    intervals, spreads = [], []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("mean"), float):
                spreads.append((node["mean"], node["std"]))
                if "ci" in node:
                    intervals.append((node["mean"], *node["ci"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for saved in SAVED:
        walk(json.loads(saved.read_text()))
    return intervals, spreads


def _quotes(text: str) -> list[tuple[str, list[str | None]]]:
    """Each quoted interval ``mean [low, high]`` (mean optional) or ``mean ± std`` with its paragraph: [None, low,
    high] for an interval without its mean."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        for match in QUOTE.finditer(paragraph):
            parts = list(match.groups()[:3]) if match.group(2) else list(match.groups()[3:])
            found.append((paragraph, parts))
    return found


def _agrees(quoted: list[str | None], values: tuple[float, ...]) -> bool:
    """Whether every quoted number is its value rounded to the quoted decimals (a dropped mean agrees)."""
    return all(
        text is None
        or abs(float(text.replace("−", "-")) - value) <= 0.5 * 10 ** -len(text.split(".")[1]) + 1e-9
        for text, value in zip(quoted, values, strict=True)
    )


def test_every_quoted_interval_and_spread_is_in_a_committed_result():
    intervals, spreads = _committed_values()
    texts = {page: page.read_text() for page in PAGES}
    earlier = [page for page, text in texts.items() if EARLIER.search(re.sub(r"(?<=.)\n> ", " ", text))]
    unmatched = []
    for page in set(PAGES) - set(earlier):
        for paragraph, quoted in _quotes(texts[page]):
            if any(_agrees(quoted, values) for values in (intervals if len(quoted) == 3 else spreads)):
                continue
            # Else a quote from an earlier-code page, which the paragraph names.
            if not any(
                src.name in paragraph and quoted in [q for _, q in _quotes(texts[src])] for src in earlier
            ):
                unmatched.append(f"{page.relative_to(DOCS.parent)}: {' '.join(map(str, quoted))}")
    assert not unmatched, "quoted, but in no committed JSON of scores:\n" + "\n".join(sorted(unmatched))


def test_the_quote_check_finds_the_numbers_it_checks():
    (paragraph, quoted), (_, spread), (_, bare) = _quotes(
        "LPIPS **+0.052 [−0.030, +0.135]**; 0.472 ± 0.015\n\nits interval ([−1.98, +0.52])"
    )
    assert quoted == ["+0.052", "−0.030", "+0.135"] and spread == ["0.472", "0.015"]
    assert bare == [None, "−1.98", "+0.52"] and "0.472" in paragraph
    assert _agrees(quoted, (0.0524, -0.0304, 0.1349)) and not _agrees(quoted, (0.0514, -0.0304, 0.1349))
    assert _agrees(["-0.000"], (0.0004,)) and _agrees(bare, (5.0, -1.98, 0.52))
    assert EARLIER.search("> Earlier code: commits `7fb53f1`–`3956d68` with `--lr-schedule delayed`; no json")
    assert not EARLIER.search("> Earlier code: commit `7fb53f1`, options unknown")
