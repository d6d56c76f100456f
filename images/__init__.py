"""Builder of Railyard's default test image and of its /usr update payloads."""

from images.build import (
    CHANNEL_VERSIONS,
    BuiltImage,
    build_image,
    build_usr_image,
    channel_version,
    default_cache_dir,
    ensure_image,
    next_version,
    signing_key,
    update_payload,
    update_version,
)
from images.metadata import ImageMetadata, read_metadata

__all__ = [
    "CHANNEL_VERSIONS",
    "BuiltImage",
    "ImageMetadata",
    "build_image",
    "build_usr_image",
    "channel_version",
    "default_cache_dir",
    "ensure_image",
    "next_version",
    "read_metadata",
    "signing_key",
    "update_payload",
    "update_version",
]
