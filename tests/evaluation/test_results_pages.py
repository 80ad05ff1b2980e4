"""The committed results pages: each ``docs/<page>/**/table6.json`` is rebuilt, every table, by the
``--no-train`` command its page ``docs/<page>.md`` gives."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from pix2pix_ilm.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"
SAVED = sorted(DOCS.glob("*/**/table6.json"))


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
    rebuilt = json.loads((tmp_path / "out" / "table6.json").read_text())
    assert rebuilt["missing"] == [] and len(rebuilt["runs"]) == len(summary["runs"])
    assert rebuilt["tables"] == summary["tables"]
    assert rebuilt.get("epoch_tables") == summary.get("epoch_tables", {})
    assert "Wall time" in capsys.readouterr().out
