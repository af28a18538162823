"""Evaluation: the shapes-world checker, Frechet distance on its features, benchmarks."""

from musekit.eval.checker import ShapeChecker, load_checker

__all__ = ["ShapeChecker", "load_checker"]
