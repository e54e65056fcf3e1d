"""Fails (exit 1) when a public name is undocumented: every name in
``lrsched_fused.__all__``, ``lrsched_fused.schedules.__all__`` and
``lrsched_fused.testing.torch_reference.__all__`` (the integrations are in the
first) must have a docstring, as griffe reads it for the API pages, and be
rendered by a ``::: module.name`` directive (or its module's) of a page under
docs/pages/api/. Usage: ``python3 docs/check_api.py`` from anywhere;
``--self-test`` also checks that an undocumented name is caught."""
import importlib
import re
import sys
from pathlib import Path

import griffe

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
PUBLIC_MODULES = ("lrsched_fused", "lrsched_fused.schedules", "lrsched_fused.testing.torch_reference")
_DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)


def rendered_paths():
    paths = set()
    for page in (DOCS / "pages" / "api").glob("*.md"):
        paths.update(_DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    return paths


def problems(package, modules, rendered):
    """The public names of ``modules`` with no docstring or no API page."""
    found = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        static = package[module_name.split(".", 1)[1]] if "." in module_name else package
        for name in module.__all__:
            path = f"{module_name}.{name}"
            try:
                obj = static[name]
                docstring = obj.docstring.value.strip() if obj.docstring else ""
                canonical = obj.canonical_path if not obj.is_module else obj.path
            except (KeyError, griffe.AliasResolutionError):
                found.append(f"{path}: not found by griffe")
                continue
            if not docstring and not (obj.is_module and any(p.startswith(path) for p in rendered)):
                found.append(f"{path}: no docstring")
            documented = path in rendered or canonical in rendered or module_name in rendered or any(
                p.startswith(path + ".") or p.startswith(canonical + ".") for p in rendered)
            if not documented:
                found.append(f"{path}: on no API page (add `::: {path}` to a page under docs/pages/api/)")
    return found


def main():
    sys.path.insert(0, str(REPO))
    package = griffe.load("lrsched_fused", search_paths=[str(REPO)], resolve_aliases=True,
                          resolve_external=False)
    found = problems(package, PUBLIC_MODULES, rendered_paths())
    if "--self-test" in sys.argv:
        # the check must catch a name with no docstring and no page
        probe = griffe.Module("probe")
        probe.set_member("undocumented", griffe.Function("undocumented"))
        fake = type(sys)("probe")
        fake.__all__ = ["undocumented"]
        sys.modules["probe"] = fake
        caught = problems(probe, ("probe",), set())
        if len(caught) != 2:
            found.append(f"self-test: an undocumented, unrendered name gave {caught}, expected two problems")
        else:
            print("check_api self-test: an undocumented name and a missing API page are caught")
    for problem in found:
        print("undocumented public name:", problem, file=sys.stderr)
    if found:
        return 1
    print(f"check_api: every public name of {', '.join(PUBLIC_MODULES)} has a docstring and an API page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
