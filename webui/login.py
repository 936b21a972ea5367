"""Login checking for the page, with the throttling Gradio's own `auth` lacks.

    launch(auth=LoginThrottle([("ann", "secret")]).check)

Security code, kept apart from the page's layout so it can be read and tested on its own.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Sequence


class LoginThrottle:
    """Checks logins and slows guessing, which Gradio's own `auth` does not.

    Every failure costs the caller `delay_s`; after `max_failures` failures for one user name
    within `window_s`, that name is refused (right password or not) until the window passes.
    Gradio hands `auth` no client address, so throttling is per name; a shared lock for all
    names would let one guesser lock every analyst out.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        max_failures: int = 5,
        window_s: float = 300.0,
        delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._passwords = dict(pairs)
        self._max_failures = max_failures
        self._window_s = window_s
        self._delay_s = delay_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, username: str, now: float) -> list[float]:
        kept = [moment for moment in self._failures.pop(username, []) if now - moment < self._window_s]
        if kept:
            self._failures[username] = kept
        return kept

    def locked(self, username: str) -> bool:
        return len(self._recent(username, self._clock())) >= self._max_failures

    async def check(self, username: str, password: str) -> bool:
        """Gradio's `auth` callable; async so that the delay never blocks the server."""
        expected = self._passwords.get(username)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        if ok and not self.locked(username):
            return True
        now = self._clock()
        if len(self._failures) > 10_000:  # names made up by a guesser must not grow memory forever
            for name in list(self._failures):
                self._recent(name, now)
        self._failures[username] = [*self._recent(username, now), now]
        await asyncio.sleep(self._delay_s)
        return False
