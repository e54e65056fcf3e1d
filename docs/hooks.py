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


# ---------------------------------------------------------------- NOTE index
# A NOTE block is defined by a line that is only `NOTE: [name]` (after a
# comment marker); every other `NOTE: [name]` cites one. design.md gets the
# table of definitions in place of its marker; a page (or the README) citing
# a NOTE that the source does not define is a warning, so the strict build
# fails on it.
import logging  # noqa: E402
import re  # noqa: E402

log = logging.getLogger("mkdocs.plugins.lrsched_fused_notes")
NOTE_SOURCES = ("csrc/**/*.h", "csrc/**/*.cuh", "csrc/**/*.cpp", "csrc/**/*.cu", "lrsched_fused/**/*.py",
                "benchmarks/*.py", "tests/*.py", "setup.py")
_DEFINITION = re.compile(r"^\s*(?://|#|\*)?\s*NOTE: \[([^\]]+)\]\s*$")
_CITATION = re.compile(r"NOTE:\s+\[([^\]]+)\]")
MARKER = "<!-- note-index -->"


def note_definitions():
    """{name: (path, line number, first line of its text)}, first definition wins."""
    notes = {}
    for pattern in NOTE_SOURCES:
        for path in sorted(REPO.glob(pattern)):
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for i, line in enumerate(lines):
                match = _DEFINITION.match(line)
                if match and match.group(1) not in notes:
                    summary = ""
                    for following in lines[i + 1:i + 4]:
                        text = following.strip().lstrip("/#* ").strip()
                        if text:
                            summary = text
                            break
                    notes[match.group(1)] = (path.relative_to(REPO).as_posix(), i + 1, summary)
    return notes


def _cited(text):
    # a citation may wrap: "NOTE:\n[name]" in Markdown
    return {" ".join(name.split()) for name in _CITATION.findall(text)}


def on_pre_build(config):
    readme = REPO / "README.md"
    if readme.exists():
        notes = note_definitions()
        for name in sorted(_cited(readme.read_text(encoding="utf-8")) - notes.keys()):
            log.warning("README.md cites NOTE: [%s], which no source file defines", name)


def on_page_markdown(markdown, page, config, files):
    notes = note_definitions()
    for name in sorted(_cited(markdown) - notes.keys()):
        log.warning("%s cites NOTE: [%s], which no source file defines", page.file.src_uri, name)
    if MARKER in markdown:
        rows = ["| NOTE | defined in | what it starts with |", "|---|---|---|"]
        for name, (path, line, summary) in sorted(notes.items(), key=lambda item: item[0].lower()):
            rows.append(f"| `{name}` | `{path}:{line}` | {summary.replace('|', '&#124;')} |")
        markdown = markdown.replace(MARKER, "\n".join(rows))
    return markdown
