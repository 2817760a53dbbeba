"""Count the passes over the logits in each implementation's optimised HLO.

    python -m bench.hlo_passes [--shape lm-32k] [--dtype float32] [--mode value_and_grad]
                               [--impls ...] [--verbose]

Compiles each implementation (without running it or allocating its inputs) and reads
`jax.jit(f).lower(...).compile().as_text()`. Every top-level op (in the entry computation, or in
the body of a while/call/conditional it runs) that reads or writes an array with as many
elements as the logits is listed: a read per such operand, a write per such output. A fused
gather that picks one element per row (the label's logit), or a scatter/dynamic-update-slice that
updates one element per row in place, touches only `batch` elements: it is listed as *partial*
and not counted as a pass. `exp`/`log` name the transcendental ops applied to logits-sized values
inside the fusion, which on a CPU can cost more than its memory traffic.

Passes = full reads + full writes. The fewest possible for value_and_grad is 2: read the logits
once, write the gradient once.

`kernels` / `kernel_summary` count bytes instead of passes, over every kernel whatever its size:
the figure `bench/aot.py` reports for GPUs, whose compiler gives no cost analysis ahead of time.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from typing import Any

_SKIP = {
    "parameter",
    "constant",
    "tuple",
    "get-tuple-element",
    "bitcast",
    "opt-barrier",
    "after-all",
    "partition-id",
    "replica-id",
    "iota",
}
_CONTROL = {"while", "call", "conditional", "async-start", "async-done"}
_PARTIAL_READERS = {"gather", "dynamic-slice", "slice"}
_IN_PLACE = {"scatter", "dynamic-update-slice"}
_TRANSCENDENTAL = {
    "exponential": "exp",
    "exponential-minus-one": "expm1",
    "log": "log",
    "log-plus-one": "log1p",
    "tanh": "tanh",
    "logistic": "logistic",
}
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


@dataclass
class Access:
    instr: Instr
    reads: int = 0
    writes: int = 0
    partial: list[str] = field(default_factory=list)
    transcendental: list[str] = field(default_factory=list)


def _param_index(comp: Computation) -> dict[str, int]:
    out = {}
    for i in comp.instrs:
        if i.op == "parameter":
            m = re.match(r"\s*(\d+)", ",".join(i.operands))
            if m:
                out[i.name] = int(m.group(1))
    return out


def _ops(text: str):
    """(computations, computation name, shapes by name, op) for each top-level op of an HLO
    module: those of the entry computation and of the bodies of the while/call/conditional ops
    it runs (each body once, not per trip), control-flow ops themselves left out."""
    comps = parse_module(text)
    entry = next(c for c in comps.values() if c.entry)
    todo, seen = [entry], set()
    while todo:
        comp = todo.pop(0)
        if comp.name in seen:
            continue
        seen.add(comp.name)
        shapes = {i.name: i.shape for i in comp.instrs}
        for ins in comp.instrs:
            if ins.op in _CONTROL:
                for key in (
                    "body",
                    "condition",
                    "to_apply",
                    "calls",
                    "branch_computations",
                    "true_computation",
                    "false_computation",
                ):
                    todo += [comps[c] for c in _called(ins.attrs, key) if c in comps]
                continue
            yield comps, comp.name, shapes, ins


def accesses(text: str, n: int) -> list[Access]:
    """The top-level ops of an HLO module that read or write `n`-element arrays."""
    result = []
    for comps, _, shapes, ins in _ops(text):
        if ins.op in _SKIP:
            continue
        acc = Access(ins)
        partial_idx: set[int] = set()
        in_place = False
        if ins.op == "fusion":
            for c in _called(ins.attrs, "calls"):
                if c in comps:
                    fused = comps[c]
                    idx = _param_index(fused)
                    pp, in_place, acc.transcendental = _fusion_details_indexed(fused, n, idx)
                    partial_idx = pp
        elif ins.op in _PARTIAL_READERS:
            partial_idx = {0}
        elif ins.op in _IN_PLACE:
            partial_idx, in_place = {0}, True
        for k, o in enumerate(ins.operands):
            if n in elements(shapes.get(o, "")):
                if k in partial_idx:
                    acc.partial.append(f"read {o}")
                else:
                    acc.reads += 1
        outs = elements(ins.shape).count(n)
        if in_place and outs:
            acc.partial.append("write in place")
        else:
            acc.writes += outs
        if acc.reads or acc.writes or acc.partial:
            result.append(acc)
    return result


def _fusion_details_indexed(
    comp: Computation, n: int, idx: dict[str, int]
) -> tuple[set[int], bool, list[str]]:
    """Parameters read only partially, whether the root updates in place, exp/log ops.

    A parameter is read partially when every path from it ends in a gather/slice that picks
    fewer than `n` elements (through elementwise ops, which a loop fusion evaluates only where
    the gather asks), or in the in-place operand of a scatter/dynamic-update-slice.
    """
    users: dict[str, list[Instr]] = {}
    for i in comp.instrs:
        for o in i.operands:
            users.setdefault(o, []).append(i)

    def only_partial(name: str, depth: int = 0) -> bool:
        us = users.get(name, [])
        if not us or depth > 50:
            return False
        for u in us:
            small = max(elements(u.shape), default=0) < n
            if u.op in _PARTIAL_READERS and u.operands[0] == name and small:
                continue
            if u.op in _IN_PLACE and u.operands[0] == name:
                continue
            if u.root or n not in elements(u.shape) or u.op in ("reduce", "reduce-window"):
                return False
            if not only_partial(u.name, depth + 1):
                return False
        return True

    partial = {k for name, k in idx.items() if only_partial(name)}
    root = next((i for i in comp.instrs if i.root), None)
    in_place = bool(root and root.op in _IN_PLACE)
    trans = [
        _TRANSCENDENTAL[i.op]
        for i in comp.instrs
        if i.op in _TRANSCENDENTAL and n in elements(i.shape)
    ]
    return partial, in_place, trans


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


def _partial_read_bytes(comp: Computation, param: str) -> int:
    """Bytes a fusion reads of `param` when only gathers/slices of it (through elementwise ops)
    are used: the sizes of those partial reads, found by walking the users."""
    users: dict[str, list[Instr]] = {}
    for i in comp.instrs:
        for o in i.operands:
            users.setdefault(o, []).append(i)
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
        written = nbytes(ins.shape)
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
                    written = nbytes(_shape_of(fused, upd))
        elif ins.op in _PARTIAL_READERS and op_bytes:
            op_bytes[0] = written
        elif ins.op in _IN_PLACE and op_bytes:
            op_bytes[0] = 0
            written = sum(op_bytes[2:]) if ins.op == "scatter" else op_bytes[1]
        out.append(Kernel(ins, comp_name, sum(op_bytes), written))
    return out


def _shape_of(comp: Computation, name: str) -> str:
    return next((i.shape for i in comp.instrs if i.name == name), "")


def _only_partial(comp: Computation, param: str) -> bool:
    users: dict[str, list[Instr]] = {}
    for i in comp.instrs:
        for o in i.operands:
            users.setdefault(o, []).append(i)

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


def summarize(acc: list[Access]) -> dict[str, int]:
    return {
        "reads": sum(a.reads for a in acc),
        "writes": sum(a.writes for a in acc),
        "passes": sum(a.reads + a.writes for a in acc),
        "partial": sum(len(a.partial) for a in acc),
        "ops": len(acc),
        "exp": sum(a.transcendental.count("exp") for a in acc),
    }


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
    from pathlib import Path

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


def report(
    impl: str, text: str, n: int, verbose: bool = True, times: dict[str, float] | None = None
) -> dict[str, int]:
    acc = accesses(text, n)
    s = summarize(acc)
    print(
        f"{impl}: {s['passes']} passes over logits-sized arrays ({s['reads']} reads, "
        f"{s['writes']} writes), {s['partial']} partial, {s['exp']} exp over them, "
        f"in {s['ops']} ops"
    )
    if times is not None:
        comps = parse_module(text)
        entry = next(c for c in comps.values() if c.entry)
        ops = [(times[i.name], i.name) for i in entry.instrs if i.name in times]
        whole = sum(t for t, _ in ops)
        print(
            f"    profiled: {whole * 1e3:.1f} ms per call in the entry computation's ops; "
            "most expensive: "
            + ", ".join(f"{name} {t * 1e3:.1f} ms" for t, name in sorted(ops, reverse=True)[:4])
        )
    if verbose:
        for a in acc:
            kind = re.search(r"kind=(\w+)", a.instr.attrs)
            what = a.instr.op + (f"/{kind.group(1)}" if kind else "")
            extra = []
            if a.transcendental:
                extra.append("+".join(a.transcendental))
            if a.partial:
                extra.append("partial: " + ", ".join(a.partial))
            ms = "" if times is None else f"{times.get(a.instr.name, 0.0) * 1e3:8.1f} ms"
            print(
                f"    {a.instr.name:<36} {what:<16} reads {a.reads} writes {a.writes}{ms}"
                + (f"  [{'; '.join(extra)}]" if extra else "")
            )
    return s


def main(argv: list[str] | None = None) -> int:
    from bench import shapes
    from bench.impls import IMPLS, Unavailable

    ap = argparse.ArgumentParser(prog="python -m bench.hlo_passes", description=__doc__)
    ap.add_argument("--shape", default="lm-32k", choices=list(shapes.SHAPES))
    ap.add_argument("--dtype", default="float32", choices=shapes.DTYPES)
    ap.add_argument("--mode", default="value_and_grad", choices=shapes.MODES)
    ap.add_argument("--impls", nargs="+", default=[i for i in IMPLS if i != "torch"])
    ap.add_argument("--quiet", action="store_true", help="counts only, no per-op listing")
    ap.add_argument("--dump", help="folder to write each implementation's HLO text into")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run each one under the JAX profiler and time every op (allocates the inputs)",
    )
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
            from pathlib import Path

            Path(args.dump).mkdir(parents=True, exist_ok=True)
            (Path(args.dump) / f"{impl}_{args.mode}_{s.label}_{args.dtype}.hlo.txt").write_text(
                text
            )
        times = profile_ops(impl, args.mode, s, args.dtype) if args.profile else None
        report(impl, text, s.elements, verbose=not args.quiet, times=times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
