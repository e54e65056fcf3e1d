"""mkdocs hook: the figures the pages show are the repository's own files
(examples/*.png, benchmarks/results/*.png), added to the site under the same
paths instead of being copied into docs/pages/, so a page cannot show a stale
copy. A page links them as ``examples/train_digits.png`` relative to the site
root, e.g. ``../examples/train_digits.png`` from ``api/``."""
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
FIGURES = ("examples/*.png", "benchmarks/results/*.png")


def on_files(files, config):
    for pattern in FIGURES:
        for path in sorted(REPO.glob(pattern)):
            files.append(File(path.relative_to(REPO).as_posix(), src_dir=str(REPO), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files
