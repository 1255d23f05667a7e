"""Files written whole or not at all (BestWeights, and zoo's run folder)."""

import glob
import os
import shutil
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


def write_folder_atomically(target, write):
    """`write(path)` to a new temporary folder beside `target`, then put it
    in `target`'s place: a previous `target` folder is renamed aside first
    (a folder cannot be renamed over another), then removed. Only between
    the two renames is there no `target`."""
    directory = os.path.dirname(os.path.abspath(target))
    temporary = tempfile.mkdtemp(dir=directory, prefix=TEMPORARY, suffix=os.path.basename(target))
    previous = temporary + ".old"
    try:
        write(temporary)
        if os.path.isdir(target):
            os.rename(target, previous)
        os.rename(temporary, target)
    finally:
        for leftover in (temporary, previous):
            shutil.rmtree(leftover, ignore_errors=True)


def remove(path):
    """Remove a file or a folder."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def leftovers(directory):
    """Temporary files and folders of writes that never finished (a crash or a kill)."""
    return glob.glob(os.path.join(directory, f"{TEMPORARY}*"))
