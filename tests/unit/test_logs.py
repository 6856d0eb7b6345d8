"""logs.LoopBatchedHandler: one write per event-loop iteration, order kept."""

from __future__ import annotations

import asyncio
import io
import logging

from cowrite.logs import JsonFormatter, LoopBatchedHandler


class Counting(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: Counting) -> logging.Logger:
    handler = LoopBatchedHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_outside_a_loop_each_record_is_written_at_once() -> None:
    stream = Counting()
    log = _logger(stream)
    log.info("one")
    assert stream.getvalue() == "INFO one\n"
    log.info("two")
    assert stream.writes == 2


async def test_one_write_per_loop_iteration_and_warnings_at_once_in_order() -> None:
    stream = Counting()
    log = _logger(stream)
    log.info("a")
    log.info("b", extra={"sid": "x"})
    assert stream.getvalue() == ""
    await asyncio.sleep(0)
    assert stream.getvalue() == "INFO a\nINFO b\n" and stream.writes == 1
    log.info("c")
    log.warning("d")  # written at once, after what waited before it
    assert stream.getvalue().endswith("INFO c\nWARNING d\n")
    await asyncio.sleep(0)
    log.info("e")
    log.handlers[0].flush()  # logging.shutdown() flushes what waits
    assert stream.getvalue().endswith("WARNING d\nINFO e\n")
    await asyncio.sleep(0)
    assert stream.getvalue().count("INFO e") == 1


def test_json_lines_carry_the_extra_fields() -> None:
    stream = Counting()
    log = _logger(stream)
    log.handlers[0].setFormatter(JsonFormatter())
    log.info("connected", extra={"event": "connect", "sid": "s1"})
    assert '"event":"connect"' in stream.getvalue() and '"sid":"s1"' in stream.getvalue()


def test_a_loop_that_closed_before_its_flush_does_not_hold_later_records() -> None:
    stream = Counting()
    log = _logger(stream)

    async def log_and_stop() -> None:
        log.info("last words")
        asyncio.get_running_loop().stop()  # the flush callback never runs

    loop = asyncio.new_event_loop()
    task = loop.create_task(log_and_stop())
    loop.run_forever()
    assert task.done()
    loop.close()
    log.info("after")  # outside a loop: written at once, after what waited
    assert stream.getvalue() == "INFO last words\nINFO after\n"

    async def again() -> None:
        log.info("new loop")
        await asyncio.sleep(0)

    asyncio.run(again())
    assert stream.getvalue().endswith("INFO new loop\n")
