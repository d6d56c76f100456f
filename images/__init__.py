"""Builder of Railyard's default test image and of its /usr update payloads."""

from images.build import BuiltImage, build_image, build_usr_image, default_cache_dir, ensure_image
from images.metadata import ImageMetadata, read_metadata

__all__ = [
    "BuiltImage",
    "ImageMetadata",
    "build_image",
    "build_usr_image",
    "default_cache_dir",
    "ensure_image",
    "read_metadata",
]
