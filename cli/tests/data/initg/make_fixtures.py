"""Writes the initg.pickle fixtures of cli/tests/initg.rs with NumPy's own pickling.

    python3 make_fixtures.py     # NumPy 2.4.6, Python 3.11.7 wrote the committed files

Layout k of class y is a (4, 6) array whose element (i, j) is 1000 y + 100 k + i + j / 8: the
test checks the converted bank against that formula, not against this script's output.
"""
import pickle

import numpy as np


def layout(y, k, dtype=np.float32, tokens=4):
    i, j = np.meshgrid(np.arange(tokens), np.arange(6), indexing="ij")
    return (1000 * y + 100 * k + i + j / 8).astype(dtype)


def write(name, obj, protocol):
    with open(name, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


# The official container as the spec reads it: a dict from class to a list of f32 arrays.
write("dict_p2.pickle", {0: [layout(0, k) for k in range(3)], 2: [layout(2, k) for k in range(2)]}, 2)
# A list of lists, f64, one array in Fortran order, protocol 4 (Python's default).
write("list_p4_f64.pickle", [[layout(0, 0, np.float64)],
                             [np.asfortranarray(layout(1, 0, np.float64)), layout(1, 1, np.float64)]], 4)
# Cases the converter refuses.
write("protocol5.pickle", {0: [layout(0, 0)]}, 5)
write("mixed_tokens.pickle", {0: [layout(0, 0)], 1: [layout(1, 0, tokens=3)]}, 4)
write("big_endian.pickle", {0: [layout(0, 0, np.dtype(">f4"))]}, 4)
write("not_arrays.pickle", {0: [[1.0, 2.0, 3.0, 4.0, 5.0]]}, 4)


class RunsCode:
    """Unpickling this with pickle.load would run a shell command; the converter never runs any."""

    def __reduce__(self):
        import os

        return (os.system, ("touch gpstoken-initg-ran-code",))


write("runs_code.pickle", {0: [RunsCode()]}, 4)
