"""Forward parity at full size: one model of each family, one direction each (the small grid of
test_forward_parity.py runs every option in both directions). A file of its own, so that under
`--dist loadfile` these minutes run beside the small grid rather than after it."""
import pytest

from parity_tests.grid import FAMILY_FULL_SIZE, FULL_SIZE
from parity_tests.test_forward_parity import _check


@pytest.mark.parametrize("preset,source", FULL_SIZE)
def test_full_size(record, preset, source):
    _check(record, preset, preset, {}, source, batch=2)


@pytest.mark.parametrize("preset,overrides,source", FAMILY_FULL_SIZE)
def test_full_size_later_families(record, preset, overrides, source):
    _check(record, preset, preset, overrides, source, batch=2)
