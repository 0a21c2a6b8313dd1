"""Rotation: which question of a prompt's bank to ask this week (pure).

Input: the size of the prompt's bank and the bank indices earlier runs asked, oldest
first (from ``PromptRun.bank_index``). Output: the index to ask now.

Rule: a question never asked before comes first (the lowest such index, so a fresh bank
is asked in the order it was written and entries added later are asked soon after);
once every entry has been asked, the least recently asked one. The effect is a fixed
cycle through the bank, so for a bank of N no question repeats within N consecutive
runs, and the question asked last time is never asked again straight away unless the
bank holds only one.

History entries outside ``range(bank_size)`` are ignored: they were recorded before the
bank was shortened and point at nothing now.
"""

from __future__ import annotations

from collections.abc import Sequence


def pick_bank_index(bank_size: int, history: Sequence[int]) -> int:
    """The bank index to ask next, given the indices asked before (oldest first)."""
    if bank_size < 1:
        raise ValueError(f"a prompt needs at least one question, bank_size={bank_size}")
    last_asked: dict[int, int] = {}  # index → position of its latest run in history
    for position, index in enumerate(history):
        if 0 <= index < bank_size:
            last_asked[index] = position
    for index in range(bank_size):
        if index not in last_asked:
            return index
    # Every entry was asked: the least recently asked. With two or more entries this is
    # never the latest run's index, which has the highest position of all.
    return min(last_asked, key=last_asked.__getitem__)
