"""Files written whole or not at all (BestWeights, and zoo's run folder)."""

import glob
import os
import tempfile

TEMPORARY = ".tmp-"


def write_atomically(target, write):
    """`write(path)` to a temporary file beside `target`, then rename it over
    `target`: a crash mid-write never leaves a torn `target`. The temporary
    name ends like `target` (Keras checks a weights file's suffix)."""
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=TEMPORARY, suffix=os.path.basename(target))
    os.close(fd)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def leftovers(directory):
    """Temporary files of writes that never finished (a crash or a kill)."""
    return glob.glob(os.path.join(directory, f"{TEMPORARY}*"))
