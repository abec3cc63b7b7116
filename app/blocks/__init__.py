"""The block library (SEMANTICS.md §5), one module per family; see base.py."""
