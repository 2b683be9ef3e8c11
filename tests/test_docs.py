"""The documentation site's structure, checked cheaply without building it (CI builds it in strict
mode, which also runs the tutorials): every page of mkdocs.yml's nav exists, every page under
docs/ is in the nav, every tutorial is executed by the build, and relative links in docs/*.md
resolve."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _nav_pages() -> list:
    """The .md paths of mkdocs.yml's nav, read without a YAML parser (the nav is a plain tree of
    `- Title: path.md` entries; PyYAML is a docs-only dependency)."""
    text = open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8").read()
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s*- (?:[^\n]*?: )?([\w./-]+\.md)\s*$", nav, re.M)


def _doc_pages() -> list:
    out = []
    for dirpath, _dirs, names in os.walk(DOCS):
        for name in names:
            if name.endswith(".md"):
                out.append(os.path.relpath(os.path.join(dirpath, name), DOCS).replace(os.sep, "/"))
    return sorted(out)


def test_nav_is_read_and_lists_the_main_sections():
    pages = _nav_pages()
    # the parse above must find the nav; these are the required parts
    for page in ("index.md", "getting-started.md", "model.md", "theory.md", "reference/ufm.md", "benchmarks.md"):
        assert page in pages, page
    assert len(pages) == len(set(pages)), "a page is listed twice"


def test_every_nav_page_exists():
    missing = [p for p in _nav_pages() if not os.path.isfile(os.path.join(DOCS, p))]
    assert not missing, f"pages in mkdocs.yml's nav that do not exist under docs/: {missing}"


def test_every_page_is_in_the_nav():
    # strict mode warns about pages outside the nav; this says which before a build
    unlisted = sorted(set(_doc_pages()) - set(_nav_pages()))
    assert not unlisted, f"pages under docs/ missing from mkdocs.yml's nav: {unlisted}"


def test_every_tutorial_is_listed_and_executed():
    tutorials = [p for p in _doc_pages() if p.startswith("tutorials/")]
    assert len(tutorials) >= 4
    nav = _nav_pages()
    for page in tutorials:
        assert page in nav, f"{page} is not in the nav"
        text = open(os.path.join(DOCS, page), encoding="utf-8").read()
        blocks = re.findall(r"^```python([^\n]*)$", text, re.M)
        assert blocks, f"{page} has no python block"
        # every python block runs when the site builds: no code shown that was not executed
        not_run = [b for b in blocks if 'exec="true"' not in b]
        assert not not_run, f"{page}: python blocks without exec=\"true\": {not_run}"


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(path: str) -> list:
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)   # not links inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)
    out = []
    for a, b in _LINK.findall(text):
        target = a or b
        if re.match(r"^([a-z][a-z0-9+.-]*:|#)", target):
            continue
        out.append(target.split("#")[0])
    return out


@pytest.mark.parametrize("page", _doc_pages())
def test_relative_links_resolve(page):
    base = os.path.dirname(os.path.join(DOCS, page))
    broken = [t for t in _relative_links(os.path.join(DOCS, page)) if not os.path.exists(os.path.normpath(os.path.join(base, t)))]
    assert not broken, f"{page}: relative links to missing files: {broken}"


def test_link_reader_finds_links_and_skips_code(tmp_path):
    # the reader itself: links and images are found; code, URLs and anchors are not links
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#part) [bad](missing.md) `[code](x.md)` ![fig](f.png) [web](https://x.org) "
                    "[anchor](#top)\n```\n[in a block](y.md)\n```\n")
    assert _relative_links(str(page)) == ["b.md", "missing.md", "f.png"]


def test_benchmark_results_are_included():
    text = open(os.path.join(DOCS, "benchmarks.md"), encoding="utf-8").read()
    included = re.findall(r"<!-- include: (\S+) -->", text)
    assert included == ["benchmarks/results.md"]
    assert os.path.isfile(os.path.join(ROOT, included[0]))


def test_readme_documentation_command_is_what_ci_runs():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Documentation"):]
    section = section[:section.index("\n## ", 1)]
    commands = [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    built = re.search(r"^DOCS_BUILD='(.*)'$", ci, re.M).group(1)
    assert commands == [built] == ['pip install -e ".[docs]" && mkdocs build --strict']
    assert re.search(r'^eval "\$DOCS_BUILD"', ci, re.M), ".ci/run does not run the documentation command"
    # after the tests: the tutorials then run on kernels the tests compiled
    assert ci.index('eval "${SETUP_TEST#* && }"') < ci.index('eval "$DOCS_BUILD"')
