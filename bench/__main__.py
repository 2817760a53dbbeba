"""`python -m bench [--quick] [--out DIR] [--allocator default|tcmalloc|both] ...`."""

from bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
