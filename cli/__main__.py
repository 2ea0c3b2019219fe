"""``python -m tidefield.cli ...`` is ``tidefield ...`` (what `tidefield up` starts its
children with, so they run on the same interpreter)."""

from tidefield.cli import main

main()
