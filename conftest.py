"""Makes a plain `pytest` in a checkout load the Railyard plugin, installed or not."""

from importlib.metadata import entry_points

if not any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["harness.plugin"]
