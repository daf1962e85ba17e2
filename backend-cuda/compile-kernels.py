#!/usr/bin/env python3
"""CUDA C -> PTX with NVRTC (through ctypes on libnvrtc), for compile-kernels.sh.

usage: compile-kernels.py LIBNVRTC OUT_DIR kernels/<family>.cu...
Writes OUT_DIR/<family>.ptx for each source; exits 1 with NVRTC's log on a compile error.
"""
import ctypes
import os
import sys

# The options every kernel is compiled with (docs/CUDA.md explains each).
ARCH = "compute_80"  # PTX for sm_80 and later (JIT-compiled for the device at load time)
OPTIONS = [f"--gpu-architecture={ARCH}", "--fmad=false", "--std=c++17", "-default-device"]


def check(lib, status, what):
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        sys.exit(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def compile_one(lib, path, include_dir):
    source = open(path, "rb").read()
    prog = ctypes.c_void_p()
    name = os.path.basename(path).encode()
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source, name, 0, None, None), "nvrtcCreateProgram")
    opts = [o.encode() for o in OPTIONS + [f"--include-path={include_dir}"]]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    status = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if status != 0:
        sys.stderr.write(log.value.decode(errors="replace"))
        sys.exit(f"{path}: NVRTC compile failed")
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value


def main():
    libpath, out_dir, sources = sys.argv[1], sys.argv[2], sys.argv[3:]
    lib = ctypes.CDLL(libpath)
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value}, {' '.join(OPTIONS)}")
    for path in sources:
        include_dir = os.path.dirname(os.path.abspath(path))
        ptx = compile_one(lib, path, include_dir)
        family = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(out_dir, family + ".ptx"), "wb") as f:
            f.write(ptx)


if __name__ == "__main__":
    main()
