"""mkdocs hook: checks of the documented API whose failures are warnings, so that
`mkdocs build --strict` fails on them; tutorials run with the repository's ufm importable.

* a public object (function, class, public method) without a docstring;
* an include marker ``<!-- include: PATH -->`` (PATH from the repository root, e.g.
  ``benchmarks/results.md``, which lives outside docs/) whose file is missing; the included
  text's relative links are rewritten to the file's folder, and the figures beside it are
  copied into the site, so the include renders as the file does on its own;
* a front-door function (``FULLY_DOCUMENTED``) with a parameter its ``Arguments:``
  section does not describe;
* an ``Arguments:`` entry naming a parameter the signature does not have (drift). The house
  style groups parameters that share a description (``rtol, atol: ...``), which griffe's own
  check cannot read (so mkdocs.yml turns that one off): here each name of a group is checked.
"""

import logging
import os
import re
import sys

log = logging.getLogger("mkdocs.plugins.ufm_docs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the modules whose public objects the API reference documents
DOCUMENTED = ("ufm", "ufm.settings", "ufm.metrics", "ufm.theory", "ufm.bridge", "ufm.sweeps", "ufm.plot",
              "ufm.xarray_interop")

#: the stable front door (and the modules the docs own): every parameter must be documented
FULLY_DOCUMENTED = ("ufm.solve", "ufm.train", "ufm.sweeps.sweep", "ufm.sweeps.grid", "ufm.bridge.load",
                    "ufm.bridge.fit", "ufm.bridge.compare", "ufm.theory.fixed_point",
                    "ufm.xarray_interop.trajectory_to_xarray", "ufm.xarray_interop.trajectory_from_xarray",
                    "ufm.xarray_interop.sweep_to_xarray", "ufm.xarray_interop.sweep_to_dataframe",
                    "ufm.xarray_interop.to_netcdf", "ufm.xarray_interop.to_zarr")


def on_config(config):
    # markdown-exec runs tutorial blocks in this process: import this checkout's ufm
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return config


INCLUDE = re.compile(r"<!-- include: (\S+) -->")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
#: files beside an included page that the site copies (figures, data)
COPIED = (".png", ".svg", ".pdf", ".jpg", ".json", ".csv")
INCLUDED_FOLDERS = ("benchmarks",)


def on_files(files, config):
    from mkdocs.structure.files import File
    for folder in INCLUDED_FOLDERS:
        for dirpath, _dirs, names in os.walk(os.path.join(ROOT, folder)):
            for fname in sorted(names):
                if fname.endswith(COPIED):
                    rel = os.path.relpath(os.path.join(dirpath, fname), ROOT)
                    files.append(File(rel, ROOT, config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    def include(match):
        rel = match.group(1)
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):
            log.warning(f"{page.file.src_uri}: include {rel!r}: no such file")
            return match.group(0)
        folder = os.path.dirname(rel)
        page_folder = os.path.dirname(page.file.src_uri)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()

        def relink(m):
            target = m.group(2)
            if re.match(r"^([a-z]+:|#|/)", target):
                return m.group(0)
            resolved = os.path.normpath(os.path.join(folder, target.split("#")[0]))
            if resolved.endswith(COPIED) and os.path.isfile(os.path.join(ROOT, resolved)):
                return m.group(1) + os.path.relpath(resolved, page_folder or ".") + m.group(3)
            # a link to something the site does not serve (a script, a folder): keep its text
            return m.group(1)[m.group(1).index("[") + 1:-2]
        return LINK.sub(relink, text)
    return INCLUDE.sub(include, markdown)


def _public(obj):
    return not obj.name.startswith("_")


def on_pre_build(config):
    import griffe
    package = griffe.load("ufm", search_paths=[ROOT], try_relative_path=False, resolve_aliases=True,
                          resolve_external=False)
    missing, drift, undocumented, checked = [], {}, {}, set()
    for name in DOCUMENTED:
        module = package if name == "ufm" else package[name.split(".", 1)[1]]
        exported = getattr(module, "exports", None)
        for member_name, member in module.members.items():
            if exported is not None and member_name not in exported:
                continue
            if exported is None and not _public(member):
                continue
            try:
                target = member.final_target if member.is_alias else member
            except Exception:  # noqa: BLE001 - an alias to something outside ufm (numpy, ...)
                continue
            if target.is_module or target.is_attribute:
                continue
            if not target.docstring:
                missing.append(f"{name}.{member_name}")
            functions = [(f"{name}.{member_name}", target)] if target.is_function else []
            if target.is_class:
                for meth_name, meth in target.members.items():
                    if not meth.is_function or meth.is_alias:
                        continue
                    if _public(meth) and not meth.docstring:
                        missing.append(f"{name}.{member_name}.{meth_name}")
                    if _public(meth) or meth_name == "__init__":
                        functions.append((f"{name}.{member_name}.{meth_name}", meth))
                # a dataclass or a class documenting its constructor's arguments in its own docstring
                init = target.members.get("__init__")
                if init is not None and init.is_function and target.docstring:
                    functions.append((f"{name}.{member_name}", _with_docstring(init, target.docstring)))
            drift.update(_unknown_arguments(functions))
            undocumented.update(_undocumented_arguments([f for f in functions if f[0] in FULLY_DOCUMENTED],
                                                        checked))
    for path in sorted(set(missing)):
        log.warning(f"no docstring: {path} (every public object of the API reference needs one)")
    for (path, lineno), names in sorted(drift.items()):
        log.warning(f"docstring of {path} (line {lineno}) documents {names}, not in its signature")
    for path, names in sorted(undocumented.items()):
        log.warning(f"docstring of {path}: its Arguments section does not describe {names}")
    not_found = sorted(set(FULLY_DOCUMENTED) - checked)
    if not_found:
        log.warning(f"docs/hooks.py: FULLY_DOCUMENTED names no documented function {not_found}")


class _with_docstring:
    """A function seen with another docstring (a class's, for its __init__)."""

    def __init__(self, function, docstring):
        self.parameters, self.docstring = function.parameters, docstring


def _documented_names(function) -> set:
    """The parameter names an Arguments section describes (grouped names split)."""
    from griffe import DocstringSectionKind, Parser
    names = set()
    sections = function.docstring.parse(Parser.google, warn_unknown_params=False, warn_missing_types=False,
                                        warnings=False)
    for section in sections:
        if section.kind is DocstringSectionKind.parameters:
            for entry in section.value:
                names.update(n.strip().lstrip("*") for n in entry.name.split(","))
    return names


def _unknown_arguments(functions) -> dict:
    out = {}
    for path, function in functions:
        if not function.docstring:
            continue
        signature = {p.name for p in function.parameters}
        unknown = sorted(n for n in _documented_names(function) if n and n not in signature)
        if unknown:
            out[(path, function.docstring.lineno or 0)] = unknown
    return out


def _undocumented_arguments(functions, checked: set) -> dict:
    out = {}
    for path, function in functions:
        checked.add(path)
        wanted = [p.name for p in function.parameters if p.name not in ("self", "cls")]
        documented = _documented_names(function) if function.docstring else set()
        absent = [n for n in wanted if n not in documented]
        if absent:
            out[path] = absent
    return out
