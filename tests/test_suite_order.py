"""The suite's own scheduling (conftest.py): the heavy-first list names files that exist, and a
run keeps that order with each file whole, which is what pytest-xdist's --dist loadfile hands out."""
import itertools
from pathlib import Path

import conftest

ROOT = Path(__file__).resolve().parents[1]


def test_heavy_first_names_existing_test_files():
    missing = [p for p in conftest.HEAVY_FIRST if not (ROOT / p).is_file()]
    assert not missing, f"conftest.HEAVY_FIRST names files that do not exist: {missing}"
    assert len(set(conftest.HEAVY_FIRST)) == len(conftest.HEAVY_FIRST)


def test_heavy_files_come_first_and_files_stay_whole(request):
    files = [item.nodeid.split("::")[0] for item in request.session.items]
    order = [f for f, _ in itertools.groupby(files)]  # one entry per unbroken run of a file's tests
    assert len(order) == len({*files}), "a file's tests are split apart"
    collected = [p for p in conftest.HEAVY_FIRST if p in order]
    assert order[:len(collected)] == collected
