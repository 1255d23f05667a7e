"""The processor a benchmark ran on, for the line it prints about the machine."""

import os
import platform


def processor():
    """'AMD EPYC 7B13, 2 CPUs' (the model name from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPUs"
