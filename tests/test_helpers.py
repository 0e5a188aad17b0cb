"""The shared test settings themselves: what every test relies on from tests/helpers.py."""
from helpers import TINY


def test_tiny_settings_pin_the_cpu():
    assert "device=cpu" in TINY
