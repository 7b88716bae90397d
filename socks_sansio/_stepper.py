"""Advancing a plan: the one loop every runner writes, minus the I/O.

A plan or session is a generator of operations. :class:`Stepper` hides the
generator protocol (``send``, ``throw``, ``StopIteration``) behind three calls,
and holds the one loop every runner needs, written twice only because one
``perform`` blocks and the other is awaited::

    value = Stepper(plan.run()).run(perform)          # blocking sockets
    value = await Stepper(plan.run()).arun(perform)    # asyncio, trio (pure Python: no event loop named)

A runner driven by callbacks (the asyncio server's protocols) calls
:meth:`Stepper.send` and :meth:`Stepper.throw` itself as results arrive.

A runner throws in only ``Exception``s: a cancellation (``KeyboardInterrupt``,
``asyncio.CancelledError``, ``trio.Cancelled``) goes past the plan to the
runner's caller, and the plan is simply dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar, final

__all__ = ["Stepper"]

_Op = TypeVar("_Op")
_R = TypeVar("_R")


@final
class Stepper(Generic[_Op, _R]):
    """Drive *steps* (a plan's generator) one operation at a time.

    Args:
        steps: the generator, not started yet.
    """

    __slots__ = ("_steps", "done", "value")

    def __init__(self, steps: Generator[_Op, Any, _R]) -> None:
        self._steps = steps
        self.done = False
        self.value: _R | None = None
        """What the generator returned, once :attr:`done`."""

    def send(self, result: object) -> _Op | None:
        """The next operation, given the last one's *result* (``None`` to start); ``None`` when done.

        Raises:
            Exception: whatever the plan raised.
        """
        try:
            return self._steps.send(result)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return None

    def throw(self, error: BaseException) -> _Op | None:
        """The next operation after the last one failed with *error*; ``None`` when done.

        Raises:
            Exception: *error* itself, or what the plan made of it.
        """
        try:
            return self._steps.throw(error)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return None

    def run(self, perform: Callable[[_Op], object]) -> _R:
        """Perform every operation with the blocking *perform*; returns what the plan returned.

        An ``Exception`` *perform* raises is thrown into the plan; anything else
        (a cancellation) closes the plan and propagates.

        Raises:
            Exception: what the plan raised.
        """
        # send() and throw() inlined: one Python call less per operation.
        steps = self._steps
        send = steps.send
        try:
            operation = send(None)
            while True:
                try:
                    result = perform(operation)
                except Exception as exc:
                    operation = steps.throw(exc)
                else:
                    operation = send(result)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return stop.value  # type: ignore[no-any-return]
        except BaseException:
            self.close()
            raise

    async def arun(self, perform: Callable[[_Op], Awaitable[object]]) -> _R:
        """:meth:`run` with an awaitable *perform* (asyncio or trio: this names neither)."""
        steps = self._steps
        send = steps.send
        try:
            operation = send(None)
            while True:
                try:
                    result = await perform(operation)
                except Exception as exc:
                    operation = steps.throw(exc)
                else:
                    operation = send(result)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return stop.value  # type: ignore[no-any-return]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Drop the plan unfinished (its generator is closed)."""
        self._steps.close()
