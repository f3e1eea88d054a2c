"""The shared machinery beneath everything else: atomic, strict-JSON files (`files`), one writer per run directory
(`lock`), thread budgets for a shared machine (`threads`), the allocator setting (`allocator`) and the record of what
a computation ran on (`provenance`).

May import: the standard library, numpy and torch only; never another part of metarl.
"""
