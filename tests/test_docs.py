"""The documentation holds: every ```bash and ```python block of README.md and docs/*.md runs as
pasted (tests/doc_blocks.py says how; the pages of doc_blocks.SECOND_FILE run in
tests/test_docs_pages.py), and the MkDocs site builds with --strict."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.doc_blocks import (PAGES, ROOT, SECOND_FILE, check_page, extract_blocks, page_id, refused_tags,
                              run_page)

# Pages named in mkdocs.yml's nav before they are written: only these may be missing, and the
# build stands in a one-line page for each (none now: every page exists).
PENDING: set[str] = set()


@pytest.mark.parametrize("page", [p for p in PAGES if page_id(p) not in SECOND_FILE], ids=page_id)
def test_code_blocks_run(page, tmp_path):
    check_page(page, tmp_path)


def test_every_page_runs_in_one_of_the_two_files():
    assert SECOND_FILE <= {page_id(p) for p in PAGES}, "SECOND_FILE names a page that does not exist"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_runner_names_the_failing_block(tmp_path):
    """A broken block fails with its page and line; skipped and text blocks do not run; a page's
    python blocks share names; each page has its own directory with train.py beside it."""
    page = write(tmp_path / "page.md", """\
        # A page

        ```bash
        test -f train.py && test -d bench && echo made > made.txt
        ```

        ```python
        value = open("made.txt").read().strip()
        ```

        <!-- skip: needs a GPU -->
        ```bash
        exit 3
        ```

        ```text
        not a command
        ```

        ```python
        assert value == "made"
        raise ValueError("broken on purpose")
        ```

        ```bash
        echo never > never.txt
        ```
        """)
    blocks = extract_blocks(page.read_text(), "page.md")
    assert [(b.line, b.lang, b.skip) for b in blocks] == [
        (3, "bash", None), (7, "python", None), (12, "bash", "needs a GPU"), (16, "text", None), (20, "python", None),
        (25, "bash", None)]
    failures, _ = run_page(page, blocks, tmp_path)
    assert len(failures) == 1
    assert failures[0].startswith("page.md:20: the ```python block raised")
    assert "ValueError: broken on purpose" in failures[0]
    assert not list(tmp_path.glob("page-*/never.txt")), "a page must stop at its first failure"


def test_runner_fails_on_a_failing_command_inside_a_bash_block(tmp_path):
    page = write(tmp_path / "page.md", """\
        ```bash
        false
        echo after
        ```
        """)
    failures, _ = run_page(page, extract_blocks(page.read_text(), "page.md"), tmp_path)
    assert len(failures) == 1 and failures[0].startswith("page.md:1: the ```bash block exited 1")


def test_untagged_and_alias_fences_are_refused():
    blocks = extract_blocks("```\nls\n```\n\n```sh\nls\n```\n\n```yaml\na: 1\n```\n", "p.md")
    assert refused_tags(blocks) == [
        "p.md:1: a ```(no language) block; tag it bash or python (run) or text (output)",
        "p.md:5: a ```sh block; tag it bash or python (run) or text (output)"]


def nav_pages(nav) -> list[str]:
    """Every page file named in mkdocs.yml's nav, depth first."""
    out = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_nav_names_every_page_and_only_pages_that_exist_or_are_pending():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    named = nav_pages(config["nav"])
    present = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert not (missing := [p for p in named if p not in present and p not in PENDING]), f"nav names missing pages: {missing}"
    assert not (orphans := sorted(present - set(named))), f"pages not in mkdocs.yml's nav: {orphans}"
    assert len(named) == len(set(named)), "a page is named twice in the nav"


def test_mkdocs_build_strict(tmp_path):
    """`mkdocs build --strict` on the docs, API pages included (mkdocstrings reads the packages'
    docstrings statically, without importing jax or torch). A pending page that has not landed
    yet is stood in for by a one-line page, so links and nav to it resolve."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    for name in PENDING:
        if not (docs / name).exists():
            (docs / name).write_text(f"# {name}\n\nBeing written.\n")
    config = (ROOT / "mkdocs.yml").read_text()
    (tmp_path / "mkdocs.yml").write_text(config)
    # mkdocstrings' `paths` and docs_dir resolve against the config file's folder: the package
    # sources are linked beside the copy, so the build reads the worktree's code.
    for name in ("vit_common", "vit_jax", "vit_torch", "vit_data", "parity_tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_readme_links_resolve():
    """The README's relative links name files that exist (or docs pages still being written)."""
    import re

    targets = re.findall(r"\]\((?!https?:|#)([^)#\s]+)", (ROOT / "README.md").read_text())
    assert targets, "the README links to its documentation"
    missing = [t for t in targets if not (ROOT / t).exists() and not (t.startswith("docs/") and t[5:] in PENDING)]
    assert not missing, f"README links to missing files: {missing}"
