"""The other half of the pages' code blocks (tests/test_docs.py runs the rest and says what is
checked): a file of its own so that pytest-xdist's --dist loadfile runs it beside test_docs.py."""
import pytest

from tests.doc_blocks import PAGES, SECOND_FILE, check_page, page_id


@pytest.mark.parametrize("page", [p for p in PAGES if page_id(p) in SECOND_FILE], ids=page_id)
def test_code_blocks_run(page, tmp_path):
    check_page(page, tmp_path)
