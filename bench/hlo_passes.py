"""Count the passes over the logits in each implementation's optimised HLO, and the bytes.

    python -m bench.hlo_passes [--shape lm-32k] [--dtype float32] [--mode value_and_grad]
                               [--impls ...] [--quiet] [--dump DIR] [--profile]

Compiles each implementation without running it and reads the optimised HLO. `kernels` lists
every kernel (a top-level op of the entry computation, or of a while/call/conditional body it
runs, each body once) with the bytes it reads and writes: the figure `bench/aot.py` reports for
GPUs, whose compiler gives no cost analysis ahead of time. `passes` counts, among those, the full
reads and writes of logits-sized arrays: a gather that picks the label's logit, or an in-place
update of one element per row, is *partial*, not a pass. The fewest for value_and_grad is 2:
read the logits once, write the gradient once.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SKIP = {
    "parameter", "constant", "tuple", "get-tuple-element", "bitcast", "opt-barrier",
    "after-all", "partition-id", "replica-id", "iota",
}  # fmt: skip
_CONTROL = {"while", "call", "conditional", "async-start", "async-done"}
_PARTIAL_READERS = {"gather", "dynamic-slice", "slice"}
_IN_PLACE = {"scatter", "dynamic-update-slice"}
_TRANSCENDENTAL = {
    "exponential": "exp", "exponential-minus-one": "expm1", "log": "log",
    "log-plus-one": "log1p", "tanh": "tanh", "logistic": "logistic",
}  # fmt: skip
_ARRAY = re.compile(r"([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")


@dataclass
class Instr:
    name: str
    shape: str
    op: str
    operands: list[str]
    attrs: str
    root: bool = False


@dataclass
class Computation:
    name: str
    entry: bool
    instrs: list[Instr] = field(default_factory=list)

    def by_name(self) -> dict[str, Instr]:
        return {i.name: i for i in self.instrs}


def _balanced(s: str, start: int) -> int:
    """Index just past the parenthesis group opening at s[start]."""
    depth = 0
    for k in range(start, len(s)):
        if s[k] in "([{":
            depth += 1
        elif s[k] in ")]}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(s)


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _parse_instr(line: str) -> Instr | None:
    m = re.match(r"\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*", line)
    if not m:
        return None
    rest = line[m.end() :]
    if rest.startswith("("):
        end = _balanced(rest, 0)
    else:
        end = rest.find(" ")
    shape, rest = rest[:end], rest[end:].lstrip()
    om = re.match(r"([a-z][\w\-]*)\(", rest)
    if not om:
        return None
    close = _balanced(rest, om.end() - 1)
    operands = []
    for tok in _split_top(re.sub(r"/\*.*?\*/", "", rest[om.end() : close - 1])):
        # Operands print as "%name" or "f32[2,3]{1,0} %name" depending on the XLA version.
        operands.append(tok.split()[-1].lstrip("%"))
    return Instr(m.group(2), shape, om.group(1), operands, rest[close:], bool(m.group(1)))


def parse_module(text: str) -> dict[str, Computation]:
    comps: dict[str, Computation] = {}
    cur: Computation | None = None
    for line in text.splitlines():
        head = re.match(r"(ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$", line)
        if head and not line.startswith(" "):
            cur = Computation(head.group(2), bool(head.group(1)))
            comps[cur.name] = cur
            continue
        if line.startswith("}"):
            cur = None
            continue
        if cur is not None:
            ins = _parse_instr(line)
            if ins is not None:
                cur.instrs.append(ins)
    return comps


def elements(shape: str) -> list[int]:
    """Element counts of each array in a (possibly tuple) shape string."""
    return [math.prod(int(d) for d in dims.split(",") if d) for _, dims in _ARRAY.findall(shape)]


def _called(attrs: str, key: str) -> list[str]:
    out = []
    for m in re.finditer(rf"{key}=\{{?([^}},]+(?:,\s*%?[\w.\-]+)*)\}}?", attrs):
        out += [s.strip().lstrip("%") for s in m.group(1).split(",")]
    return out


def _users(comp: Computation) -> dict[str, list[Instr]]:
    users: dict[str, list[Instr]] = {}
    for i in comp.instrs:
        for o in i.operands:
            users.setdefault(o, []).append(i)
    return users


def _param_index(comp: Computation) -> dict[str, int]:
    out = {}
    for i in comp.instrs:
        m = re.match(r"\s*(\d+)", ",".join(i.operands)) if i.op == "parameter" else None
        if m:
            out[i.name] = int(m.group(1))
    return out


_CALLED = ("body", "condition", "to_apply", "calls", "branch_computations")
_CALLED += ("true_computation", "false_computation")


def _ops(text: str):
    """(computations, computation name, shapes by name, op) for each top-level op of an HLO
    module: those of the entry computation and of the bodies of the while/call/conditional ops
    it runs (each body once, not per trip), control-flow ops themselves left out."""
    comps = parse_module(text)
    todo, seen = [next(c for c in comps.values() if c.entry)], set()
    while todo:
        comp = todo.pop(0)
        if comp.name in seen:
            continue
        seen.add(comp.name)
        shapes = {i.name: i.shape for i in comp.instrs}
        for ins in comp.instrs:
            if ins.op in _CONTROL:
                todo += [comps[c] for key in _CALLED for c in _called(ins.attrs, key) if c in comps]
                continue
            yield comps, comp.name, shapes, ins


# --- bytes per kernel, for targets whose compiler gives no cost analysis (XLA:GPU AOT) -----

_BYTES = {
    "pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4,
    "s64": 8, "u64": 8, "f16": 2, "bf16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
#: Top-level ops that launch no kernel of their own: plumbing, aliases and async bookkeeping.
_NO_KERNEL = _SKIP | _CONTROL | {"copy-done", "send-done", "recv-done", "all-reduce-done"}


def nbytes(shape: str) -> int:
    """Bytes of every array in a (possibly tuple) shape string; f8/f4 kinds count one byte."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        n = math.prod(int(d) for d in dims.split(",") if d)
        total += n * _BYTES.get(dtype, 1)
    return total


@dataclass
class Kernel:
    instr: Instr
    computation: str
    read: int  # bytes
    written: int
    #: (shape, bytes read) per operand: fewer bytes than the shape's when read only in part.
    operands: list[tuple[str, int]] = field(default_factory=list)
    in_place: bool = False  # its output updates an operand's buffer
    transcendental: list[str] = field(default_factory=list)  # per-element exp, log, ... ops


def _partial_read_bytes(comp: Computation, param: str) -> int:
    """Bytes a fusion reads of `param` when only gathers/slices of it (through elementwise ops)
    are used: the sizes of those partial reads, found by walking the users."""
    users = _users(comp)
    total, todo, seen = 0, [param], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for u in users.get(name, []):
            if u.op in _PARTIAL_READERS and u.operands[0] == name:
                total += nbytes(u.shape)
            elif u.op in _IN_PLACE and u.operands[0] == name:
                continue  # the buffer updated in place: not read
            else:
                todo.append(u.name)
    return total


def kernels(text: str) -> list[Kernel]:
    """Every kernel an optimised HLO module launches, with the bytes it reads and writes.

    A kernel is a top-level op of the entry computation, or of the body of a while/call/
    conditional it runs (each body counted once, not per trip, as XLA's own cost analysis does),
    other than plumbing (parameters, tuples, get-tuple-element, bitcasts, constants). It reads
    its operands and writes its output, except that an operand read only through a gather or
    slice counts the bytes gathered, and the operand a scatter/dynamic-update-slice updates in
    place counts neither as read nor as rewritten: only the update is written.
    """
    out = []
    for comps, comp_name, shapes, ins in _ops(text):
        if ins.op in _NO_KERNEL:
            continue
        op_bytes = [nbytes(shapes.get(o, "")) for o in ins.operands]
        written, in_place, trans = nbytes(ins.shape), ins.op in _IN_PLACE, []
        if ins.op == "fusion":
            fused = next((comps[c] for c in _called(ins.attrs, "calls") if c in comps), None)
            if fused is not None:
                root = next((i for i in fused.instrs if i.root), None)
                for name, k in _param_index(fused).items():
                    if k < len(op_bytes):
                        part = _partial_read_bytes(fused, name)
                        if part < op_bytes[k] and _only_partial(fused, name):
                            op_bytes[k] = part
                if root is not None and root.op in _IN_PLACE:
                    # The output aliases the updated operand: only the update is written.
                    upd = root.operands[2 if root.op == "scatter" else 1]
                    written, in_place = nbytes(_shape_of(fused, upd)), True
                trans = [_TRANSCENDENTAL[i.op] for i in fused.instrs if i.op in _TRANSCENDENTAL]
        elif ins.op in _PARTIAL_READERS and op_bytes:
            op_bytes[0] = written
        elif in_place and op_bytes:
            op_bytes[0] = 0
            written = sum(op_bytes[2:]) if ins.op == "scatter" else op_bytes[1]
        shapes_in = [shapes.get(o, "") for o in ins.operands]
        operands = list(zip(shapes_in, op_bytes, strict=True))
        out.append(Kernel(ins, comp_name, sum(op_bytes), written, operands, in_place, trans))
    return out


def _shape_of(comp: Computation, name: str) -> str:
    return next((i.shape for i in comp.instrs if i.name == name), "")


def _only_partial(comp: Computation, param: str) -> bool:
    users = _users(comp)

    def walk(name: str, depth: int) -> bool:
        us = users.get(name, [])
        if not us or depth > 50:
            return False
        for u in us:
            if u.op in _PARTIAL_READERS and u.operands[0] == name:
                continue
            if u.op in _IN_PLACE and u.operands[0] == name:
                continue
            if u.root or u.op in ("reduce", "reduce-window", "dot", "convolution"):
                return False
            if not walk(u.name, depth + 1):
                return False
        return True

    return walk(param, 0)


def kernel_summary(text: str) -> dict[str, int]:
    """Bytes accessed (read + written) and kernel count of an optimised HLO module."""
    ks = kernels(text)
    return {
        "bytes_accessed": sum(k.read + k.written for k in ks),
        "bytes_read": sum(k.read for k in ks),
        "bytes_written": sum(k.written for k in ks),
        "kernels": len(ks),
    }


def passes(text: str, n: int) -> dict[str, Any]:
    """Full reads and writes of `n`-element arrays by the kernels of an HLO module: one pass
    each. An operand read only through a gather or slice, or updated in place, is *partial*."""
    out: dict[str, Any] = {"reads": 0, "writes": 0, "partial": 0, "exp": 0, "kernels": []}
    for k in kernels(text):
        reads = [b == nbytes(sh) for sh, b in k.operands if n in elements(sh)]
        writes = 0 if k.in_place else elements(k.instr.shape).count(n)
        if reads or writes:
            out["kernels"].append((k, sum(reads), writes, len(reads) - sum(reads)))
            out["reads"] += sum(reads)
            out["writes"] += writes
            out["partial"] += (
                len(reads) - sum(reads) + (k.in_place and n in elements(k.instr.shape))
            )
            out["exp"] += k.transcendental.count("exp")
    out["passes"] = out["reads"] + out["writes"]
    return out


def compiled_text(impl: str, mode: str, batch: int, classes: int, hidden: int, dtype: str) -> str:
    import jax
    import jax.numpy as jnp

    from bench import impls

    dt = impls.DTYPES[dtype]
    sds = jax.ShapeDtypeStruct
    inputs = impls.Inputs(
        sds((batch, classes), dt),
        sds((batch,), jnp.int32),
        sds((batch, hidden), dt),
        sds((hidden, classes), dt),
    )
    fn = impls.jax_function(impl, mode)
    # Abstract ShapeDtypeStructs stand in for the arrays: lowering needs only shapes and dtypes.
    args = impls.mode_args(mode, inputs)
    return jax.jit(fn).lower(*args).compile().as_text()


def profile_ops(impl: str, mode: str, shape: Any, dtype: str, calls: int = 3) -> dict[str, float]:
    """Run the compiled function under the JAX profiler; seconds per call of each named op.

    The CPU and GPU runtimes both record one trace event per executed HLO op (thunk or kernel),
    named after the instruction, so the sums line up with the listing above.
    """
    import gzip
    import json
    import tempfile

    import jax

    from bench import impls

    inputs = impls.make_inputs(shape.batch, shape.classes, shape.hidden, dtype)
    args = impls.mode_args(mode, inputs)
    compiled = jax.jit(impls.jax_function(impl, mode)).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(compiled(*args))
        trace = next(Path(d).rglob("perfetto_trace.json.gz"))
        data = json.loads(gzip.decompress(trace.read_bytes()))
    events = data["traceEvents"] if isinstance(data, dict) else data
    total: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            total[e["name"]] = total.get(e["name"], 0.0) + e["dur"] * 1e-6 / calls
    return total


def report(impl: str, text: str, n: int, verbose: bool, times: dict[str, float] | None) -> None:
    s = passes(text, n)
    print(
        f"{impl}: {s['passes']} passes over logits-sized arrays ({s['reads']} reads, "
        f"{s['writes']} writes), {s['partial']} partial, {s['exp']} exp, in "
        f"{len(s['kernels'])} of {len(kernels(text))} kernels"
        + ("" if times is None else f"; profiled: {sum(times.values()) * 1e3:.1f} ms per call")
    )
    for k, reads, writes, part in s["kernels"] if verbose else ():
        kind = re.search(r"kind=(\w+)", k.instr.attrs)
        what = k.instr.op + (f"/{kind.group(1)}" if kind else "")
        ms = "" if times is None else f"{times.get(k.instr.name, 0.0) * 1e3:8.1f} ms"
        extra = "+".join(k.transcendental) + (" in place" if k.in_place else "")
        extra += f" {part} partial read(s)" if part else ""
        print(f"    {k.instr.name:<36} {what:<16} reads {reads} writes {writes}{ms}  {extra}")


def main(argv: list[str] | None = None) -> int:
    from bench import shapes
    from bench.impls import IMPLS, LINEAR_ONLY, Unavailable

    ap = argparse.ArgumentParser(prog="python -m bench.hlo_passes", description=__doc__)
    ap.add_argument("--shape", default="lm-32k", choices=list(shapes.SHAPES))
    ap.add_argument("--dtype", default="float32", choices=shapes.DTYPES)
    ap.add_argument("--mode", default="value_and_grad", choices=shapes.MODES)
    jax_impls = [i for i in IMPLS if not i.startswith("torch")]
    ap.add_argument("--impls", nargs="+", default=[i for i in jax_impls if i not in LINEAR_ONLY])
    ap.add_argument("--quiet", action="store_true", help="counts only, no per-op listing")
    ap.add_argument("--dump", help="folder to write each implementation's HLO text into")
    ap.add_argument("--profile", action="store_true", help="also time each op (runs it)")
    args = ap.parse_args(argv)
    s = shapes.SHAPES[args.shape]
    print(f"{args.mode} at {s.label} {args.dtype}: ops touching arrays of {s.elements} elements")
    for impl in args.impls:
        try:
            text = compiled_text(impl, args.mode, s.batch, s.classes, s.hidden, args.dtype)
        except Unavailable as e:
            print(f"{impl}: unavailable ({e})")
            continue
        if args.dump:
            dump = Path(args.dump) / f"{impl}_{args.mode}_{s.label}_{args.dtype}.hlo.txt"
            dump.parent.mkdir(parents=True, exist_ok=True)
            dump.write_text(text)
        times = profile_ops(impl, args.mode, s, args.dtype) if args.profile else None
        report(impl, text, s.elements, verbose=not args.quiet, times=times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
