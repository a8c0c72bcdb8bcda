"""Doctest collection of the adapters: skip an adapter whose framework is not installed."""

import importlib.util

collect_ignore_glob = [
    f"{package}/*"
    for package, framework in (("sketchlinalg_jax", "jax"), ("sketchlinalg_torch", "torch"))
    if importlib.util.find_spec(framework) is None
]
