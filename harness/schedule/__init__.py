"""A seeded random schedule of operations and faults, run on the real system, with the
invariants checked after every step and at every quiet point (``docs/schedule.md``).

``plan`` draws the steps from ``random.Random(seed)``; ``system`` starts and breaks the real
processes; ``checks`` holds the invariants; ``runner`` executes a plan; ``__main__`` is the
command (``bash scripts/schedule --seed N --steps S``).
"""
