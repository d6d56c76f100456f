"""Programs the image runs that are Python modules here (checked by ruff and mypy), installed into the tree by
images.tree (see INSTALLED_FILES)."""
