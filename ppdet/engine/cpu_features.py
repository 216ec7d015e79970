"""Which INT8 instructions this CPU has, and whether INT8 inference will pay on it.

oneDNN's INT8 convolutions are fast with VNNI (``avx512_vnni`` or ``avx_vnni``) and faster
with AMX (``amx_int8``); on AVX-512 without VNNI Paddle's docs report about 1.5x over FP32,
and on AVX2-only CPUs INT8 can be slower than FP32.
"""
import sys

__all__ = ["INT8_FLAGS", "cpu_flags", "cpu_features", "int8_advice", "log_int8_support"]

INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512f", "avx2")
_LOGGED = []


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (empty when ``cpuinfo`` cannot be read)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_features(flags=None):
    """The INT8-relevant flags present, in ``INT8_FLAGS`` order."""
    flags = cpu_flags() if flags is None else set(flags)
    return [f for f in INT8_FLAGS if f in flags]


def int8_advice(features):
    """(one line for the log, whether INT8 is expected to pay on these features)."""
    have = set(features)
    found = ", ".join(features) or "none of " + ", ".join(INT8_FLAGS)
    if have & {"amx_int8", "avx512_vnni", "avx_vnni"}:
        return f"INT8 on CPU: found {found}: INT8 convolutions run on VNNI/AMX", True
    if "avx512f" in have:
        return (f"warning: INT8 on CPU: found {found}, no VNNI: expect about 1.5x over FP32 "
                f"at best"), False
    return (f"warning: INT8 on CPU: found {found}, no VNNI nor AVX-512: INT8 will probably "
            f"not be faster than FP32 here"), False


def log_int8_support(stream=None):
    """Print ``int8_advice`` once per process (to stdout: the log, not an error)."""
    if _LOGGED:
        return
    _LOGGED.append(True)
    print(int8_advice(cpu_features())[0], file=stream or sys.stdout)
