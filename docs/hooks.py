"""mkdocs hook: checks of the documented API whose failures are warnings, so that
`mkdocs build --strict` fails on them; tutorials run with the repository's ufm importable.

* a public object (function, class, public method) without a docstring;
* an include marker ``<!-- include: PATH -->`` (PATH from the repository root, e.g.
  ``benchmarks/results.md``, which lives outside docs/) whose file is missing; the included
  text's relative links are rewritten to the file's folder, and the figures beside it are
  copied into the site, so the include renders as the file does on its own;
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
    missing, drift = [], {}
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
    for path in sorted(set(missing)):
        log.warning(f"no docstring: {path} (every public object of the API reference needs one)")
    for (path, lineno), names in sorted(drift.items()):
        log.warning(f"docstring of {path} (line {lineno}) documents {names}, not in its signature")


class _with_docstring:
    """A function seen with another docstring (a class's, for its __init__)."""

    def __init__(self, function, docstring):
        self.parameters, self.docstring = function.parameters, docstring


def _unknown_arguments(functions) -> dict:
    from griffe import DocstringSectionKind, Parser
    out = {}
    for path, function in functions:
        if not function.docstring:
            continue
        signature = {p.name for p in function.parameters}
        sections = function.docstring.parse(Parser.google, warn_unknown_params=False, warn_missing_types=False,
                                            warnings=False)
        for section in sections:
            if section.kind is not DocstringSectionKind.parameters:
                continue
            for entry in section.value:
                names = [n.strip().lstrip("*") for n in entry.name.split(",")]
                unknown = [n for n in names if n and n not in signature]
                if unknown:
                    out[(path, function.docstring.lineno or 0)] = unknown
    return out
