"""Folds a `perf record --call-graph dwarf` profile of `make bench-train` into the step's
cost centres: reads `perf script` text on stdin, prints one line per centre with its share
of the samples. Each sample goes to the first rule that matches, tried in this order over
its stack (leaf first), so a matmul inside GELU's backward counts as matmul.

  perf script -i demo.data | python3 scripts/profile_breakdown.py"""
import re
import sys
from collections import Counter

# (centre, pattern matched against the leaf frame only)
LEAF = [
    ("matmul (GEMM kernels and packing)", r"matrixmultiply|sgemm|cblas|openblas|dgemm|gemm_"),
    ("thread hand-offs (rayon, channels, scheduler)",
     r"rayon_core::sleep|crossbeam|sched_yield|finish_task_switch|__schedule|futex|_raw_spin|do_sched_yield|syscall"),
    ("allocation and page faults", r"memset|malloc|_int_free|cfree|page_fault|clear_page|do_anonymous_page|mmap|munmap|unmap_page"),
]
# (centre, pattern matched against any frame of the stack, leaf first)
STACK = [
    ("matmul (GEMM kernels and packing)", r"ops::matmul::matmul|float_matmul"),
    ("GELU", r"gelu"),
    ("LayerNorm", r"layer_norm|LayerNorm|var_mean"),
    ("attention scores and softmax", r"softmax|attention"),
    ("gathers and scatters", r"gather|scatter|select"),
    ("layout copies (reshape, swap, cat, slice)", r"reshape|swap_dims|permute|float_cat|::cat|slice"),
    ("AdamW, gradient norm and EMA", r"burn_optim|optim::AdamW|DecayMatrices|clip_grad_norm|SumSquares|ScaleGrads|ema::"),
    ("autodiff bookkeeping", r"burn_autodiff"),
]


def centre(stack):
    leaf = stack[0] if stack else ""
    for name, pattern in LEAF:
        if re.search(pattern, leaf):
            return name
    for name, pattern in STACK:
        if any(re.search(pattern, frame) for frame in stack):
            return name
    return "elementwise and other"


def samples(lines):
    stack = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line.startswith("\t") or line.startswith(" "):
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                stack.append(parts[1])
    if stack:
        yield stack


def main():
    counts = Counter(centre(stack) for stack in samples(sys.stdin))
    total = sum(counts.values()) or 1
    for name, count in counts.most_common():
        print(f"{100 * count / total:5.1f}%  {name}")
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
