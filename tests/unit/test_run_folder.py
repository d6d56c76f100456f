"""A run folder and the `<platform>-latest` link appear only when a run boots something."""

from __future__ import annotations

from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (str(p.readlink()) if p.is_symlink() else "dir" if p.is_dir() else "file")
        for p in sorted(root.rglob("*"))
    }


def test_collect_only_and_help_leave_the_output_root_alone(pytester):
    pytester.makepyfile(
        test_some="""
        def test_needs_a_machine(machine):
            pass
        """
    )
    root = pytester.path / "_railyard"
    earlier = root / "qemu-20260101-000000-abcd"
    earlier.mkdir(parents=True)
    (root / "qemu-latest").symlink_to(earlier.name)
    before = snapshot(root)

    for args in (["--co", "-q"], ["--help"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
        assert result.ret == 0, result.stdout.str()
        assert snapshot(root) == before, args


def test_a_run_that_skips_everything_makes_no_folder(pytester):
    pytester.makepyfile(
        test_some="""
        import pytest

        @pytest.mark.exclude_platforms("qemu")
        def test_needs_a_machine(machine):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    assert not (pytester.path / "_railyard").exists()
