import argparse

import pytest

from harness.cli import main, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("6h", 21600.0), ("2d", 172800.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6 hours", "-1h", "h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


def test_an_unknown_platform_is_one_clear_error(capsys):
    assert main(["gc", "--platform", "nowhere"]) == 2
    assert "unknown platform 'nowhere'" in capsys.readouterr().err


def test_qemu_gc_of_an_empty_output_root(tmp_path, capsys):
    assert main(["gc", "--platform=qemu", "--output-root", str(tmp_path / "none")]) == 0
    assert "qemu: 0 leftover(s) removed" in capsys.readouterr().out


def test_qemu_cannot_upload_images(tmp_path, capsys):
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"")
    assert main(["image", "upload", "--platform", "qemu", "--image", str(image)]) == 2
    assert "cannot upload images" in capsys.readouterr().err
