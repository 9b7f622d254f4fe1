"""A random stream that a test writes out: each draw takes the next scripted value and is recorded with the range
it drew from, so a hand-worked case checks the draws as well as what the code made of them. Subclasses give the
API of the generator they stand in for (numpy's Generator, random.Random)."""

from __future__ import annotations


class Scripted:
    def __init__(self, *values):
        self.values, self.calls = list(values), []

    def _next(self, call):
        self.calls.append(call)
        return self.values.pop(0)

    def done(self) -> bool:
        return not self.values
