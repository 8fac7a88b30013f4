"""The problem: operations, the expression grammar, data and splits, metrics. NumPy only.

Everything here is about arithmetic and numbers, nothing about networks or search: the data a
study trains on, and how its answers are judged.
"""
