"""A clock the tests move by hand: ``clock()`` reads it, ``clock.sleep(s)`` records the wait and moves it on."""


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now, self.sleeps = now, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
