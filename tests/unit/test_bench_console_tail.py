import threading
import time

import pytest

from bench.console_tail import ConsoleTail


def test_lines_are_stamped_as_they_appear(tmp_path):
    console = tmp_path / "console.txt"
    with ConsoleTail(console, interval=0.005) as tail:
        time.sleep(0.05)  # the file does not exist yet
        with console.open("ab") as out:
            out.write(b"BdsDxe: starting Boot0001\r\n")
            out.flush()
            first = tail.wait_for("BdsDxe", timeout=5.0)
            time.sleep(0.2)
            out.write(b"reboot: Restarting system\n")
            out.flush()
            second = tail.wait_for("Restarting", timeout=5.0)
    assert first.text == "BdsDxe: starting Boot0001"
    assert second.text == "reboot: Restarting system"
    assert second.at - first.at >= 0.15


def test_a_line_is_stamped_when_it_is_complete(tmp_path):
    console = tmp_path / "console.txt"
    console.write_bytes(b"")
    with ConsoleTail(console, interval=0.005) as tail:
        with console.open("ab") as out:
            out.write(b"railyard login: ")  # a prompt: the next kernel message ends its line
            out.flush()
            time.sleep(0.2)
            ended = time.monotonic()
            out.write(b"[   66.9] reboot: Restarting system\nnext\n")
            out.flush()
            line = tail.wait_for("Restarting", timeout=5.0)
            following = tail.wait_for("next", timeout=5.0)
    assert line.text == "railyard login: [   66.9] reboot: Restarting system"
    assert line.at >= ended
    assert following.at >= ended


def test_wait_for_looks_from_a_mark_on(tmp_path):
    console = tmp_path / "console.txt"
    console.write_text("RAILYARD-BENCH-USERSPACE\n")
    with ConsoleTail(console, interval=0.005) as tail:
        tail.wait_for("RAILYARD", timeout=5.0)
        mark = tail.count()
        with pytest.raises(TimeoutError, match="RAILYARD"):
            tail.wait_for("RAILYARD", since=mark, timeout=0.1)

        def later() -> None:
            time.sleep(0.1)
            with console.open("a") as out:
                out.write("RAILYARD again\n")

        writer = threading.Thread(target=later)
        writer.start()
        assert tail.wait_for("RAILYARD", since=mark, timeout=5.0).text == "RAILYARD again"
        writer.join()
    assert [x.text for x in tail.lines(mark)] == ["RAILYARD again"]


def test_a_truncated_file_is_read_from_its_start_again(tmp_path):
    console = tmp_path / "console.txt"
    console.write_text("old line one\nold line two\n")
    with ConsoleTail(console, interval=0.005) as tail:
        tail.wait_for("two", timeout=5.0)
        console.write_text("new\n")
        assert tail.wait_for("new", timeout=5.0).text == "new"
    assert [x.text for x in tail.lines()] == ["old line one", "old line two", "new"]


def test_stop_keeps_an_unfinished_last_line_and_undecodable_bytes(tmp_path):
    console = tmp_path / "console.txt"
    console.write_bytes(b"\x1b[0;32m  OK  \x1b[0m\n\xff\xfe no newline")
    tail = ConsoleTail(console, interval=0.005).start()
    tail.wait_for("OK", timeout=5.0)
    tail.stop()
    tail.stop()
    texts = [x.text for x in tail.lines()]
    assert texts[0] == "\x1b[0;32m  OK  \x1b[0m"
    assert texts[1].endswith(" no newline")
    assert len(texts) == 2


def test_stamps_come_from_the_clock_given(tmp_path):
    console = tmp_path / "console.txt"
    console.write_text("a\nb\n")
    ticks = iter(range(100, 1000))
    with ConsoleTail(console, interval=0.005, clock=lambda: float(next(ticks))) as tail:
        tail.wait_for("b", timeout=5.0)
    assert [x.at for x in tail.lines()] == [100.0, 100.0]
