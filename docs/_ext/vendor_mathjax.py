"""Refresh the copy of MathJax that the documentation site serves itself.

The site renders its formulas without any network: `docs/javascripts/mathjax/` holds MathJax's
`tex-mml-chtml` bundle and the CommonHTML web fonts it loads, copied from the npm package at the
version pinned below. The files are committed, so `make docs` needs neither npm nor a network.
This script is how they were made, and how to move to another version:

    python docs/_ext/vendor_mathjax.py            # fetch with `npm pack`, check, unpack
    python docs/_ext/vendor_mathjax.py --check    # only compare the files with MANIFEST

`npm pack` downloads the package's tarball; its SHA-512 must equal the registry's integrity
string pinned here before anything is unpacked. The script then writes `MANIFEST` (the
SHA-256 of every vendored file), which `tests/test_docs_site.py` checks.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
# The registry's dist.integrity of the tarball (`npm view mathjax@VERSION dist.integrity`).
INTEGRITY = (
    "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+"
    "UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
)
DEST = Path(__file__).resolve().parent.parent / "javascripts" / "mathjax"
# The bundle, the fonts it loads relative to itself, and the licence it is distributed under.
WANTED = ("es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/", "LICENSE")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_lines(root: Path) -> list[str]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST")
    return [f"{_sha256(p)}  {p.relative_to(root).as_posix()}" for p in files]


def check(root: Path = DEST) -> list[str]:
    """Differences between the vendored files and MANIFEST (empty when they agree)."""
    manifest = root / "MANIFEST"
    if not manifest.is_file():
        return [f"{manifest} is missing"]
    want = [
        line
        for line in manifest.read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    have = manifest_lines(root)
    return sorted(set(want) ^ set(have))


def fetch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", f"mathjax@{VERSION}", "--silent", "--pack-destination", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tarball = next(Path(tmp).glob("mathjax-*.tgz"))
        digest = hashlib.sha512(tarball.read_bytes()).digest()
        got = "sha512-" + base64.b64encode(digest).decode()
        if got != INTEGRITY:
            sys.exit(f"{tarball.name}: integrity {got} is not the pinned {INTEGRITY}")
        with tarfile.open(tarball) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and any(m.name.removeprefix("package/").startswith(w) for w in WANTED)
            ]
            for m in members:
                target = DEST / m.name.removeprefix("package/")
                target.parent.mkdir(parents=True, exist_ok=True)
                extracted = tar.extractfile(m)
                assert extracted is not None
                target.write_bytes(extracted.read())
    header = [f"# mathjax@{VERSION} from the npm registry, tarball {INTEGRITY}"]
    (DEST / "MANIFEST").write_text("\n".join(header + manifest_lines(DEST)) + "\n", "utf-8")
    print(f"vendored mathjax@{VERSION} into {DEST}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the files with MANIFEST")
    if parser.parse_args().check:
        diff = check()
        if diff:
            sys.exit("vendored MathJax differs from MANIFEST:\n" + "\n".join(diff))
        print("vendored MathJax matches MANIFEST")
    else:
        fetch()


if __name__ == "__main__":
    main()
