#!/usr/bin/env python3
"""Writes, for kernels/<family>.cu, a C++ file that includes it and adds one host entry per kernel:
extern "C" void emu_<name>(unsigned grid, unsigned block, const void* params, const uint64_t* args)."""
import re, sys
src, out = sys.argv[1], sys.argv[2]
text = open(src).read()
lines = ['#include "cuda_shim.hpp"', '#include <functional>', f'#include "{src}"',
         'void emu_run_grid(unsigned grid, unsigned block, const std::function<void()>& body);']
for m in re.finditer(r'extern "C" __global__ void (\w+)\(([^)]*)\)', text):
    name, sig = m.group(1), m.group(2)
    args = [a.strip() for a in sig.split(',')]
    ptype = args[0].rsplit(' ', 1)[0]
    casts = ', '.join(f'({a.rsplit(" ", 1)[0]})args[{i}]' for i, a in enumerate(args[1:]))
    lines.append(f'extern "C" void emu_{name}(unsigned grid, unsigned block, const void* params, const uint64_t* args) {{\n'
                 f'    {ptype} p;\n    std::memcpy(&p, params, sizeof p);\n'
                 f'    emu_run_grid(grid, block, [&] {{ {name}(p{", " if casts else ""}{casts}); }});\n}}')
open(out, 'w').write('\n'.join(lines) + '\n')
