"""Programs the image runs that are Python here (checked by ruff and mypy), installed into the tree by
images.tree (see INSTALLED_FILES): the update agent, the railyard_agent package, and launcher.py, which
the image runs as /usr/lib/railyard/update-agent."""
