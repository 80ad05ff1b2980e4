"""Paired A/B folders (``--dataset-mode paired``): ``<phase>_A/`` and ``<phase>_B/`` hold separate A and B
images matched by file stem (``12.jpg`` with ``12.png``); :func:`phase_items` reads a phase in either layout."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pix2pix_ilm.data.aligned import AlignedDataset
from pix2pix_ilm.data.images import check_same_size, list_images, load_rgb, named, natural_key, phase_folder
from pix2pix_ilm.errors import UsageError


def _by_stem(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The folder's images by stem, and one problem per stem held by two files."""
    files: dict[str, Path] = {}
    problems = []
    for path in list_images(folder):
        if path.stem in files:
            problems.append(f"{files[path.stem]} and {path.name} have the same stem")
        else:
            files[path.stem] = path
    return files, problems


def paired_files(dataroot: Path | str, phase: str) -> list[tuple[Path, Path]]:
    """``(A file, B file)`` for every stem of ``<phase>_A/`` and ``<phase>_B/``, in natural order; a file
    without its partner (or two files of one stem) is an error naming them."""
    folder_a, folder_b = (phase_folder(dataroot, phase, side) for side in ("_A", "_B"))
    (files_a, problems_a), (files_b, problems_b) = _by_stem(folder_a), _by_stem(folder_b)
    unpaired = [
        f"{path} has no {path.stem}.* in {other}/"
        for files, partners, other in ((files_a, files_b, folder_b), (files_b, files_a, folder_a))
        for stem, path in files.items()
        if stem not in partners
    ]
    problems = problems_a + problems_b + sorted(unpaired, key=natural_key)
    if problems:
        raise UsageError(
            f"{len(problems)} problem(s) pairing {folder_a}/ with {folder_b}/ (pairs are matched by file stem): "
            f"{named(problems)}"
        )
    return [(files_a[stem], files_b[stem]) for stem in sorted(files_a, key=natural_key)]


def phase_items(
    dataroot: Path | str, phase: str, paired: bool
) -> tuple[str, list[Path] | list[tuple[Path, Path]]]:
    """Where ``--phase`` is read from (for messages) and its items: the images of ``<phase>/`` or, ``paired``,
    the pairs of ``<phase>_A/`` and ``<phase>_B/``."""
    if paired:
        return f"{Path(dataroot) / phase}_A/ and _B/", paired_files(dataroot, phase)
    folder = phase_folder(dataroot, phase)
    return str(folder), list_images(folder)


class PairedDataset(AlignedDataset):
    """:class:`AlignedDataset` whose items are ``(A file, B file)`` pairs, cropped and flipped alike."""

    def _read(self, index: int) -> tuple[Image.Image, Image.Image, Path]:
        path_a, path_b = self.paths[index]
        image_a, image_b = load_rgb(path_a), load_rgb(path_b)
        check_same_size((path_a, path_b), (image_a.size, image_b.size))
        return image_a, image_b, path_a if self.direction == "AtoB" else path_b
