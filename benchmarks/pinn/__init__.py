"""The PINN benchmark suite (issue 5): problems, optimizer configurations, runners, report.

``python -m benchmarks.pinn`` trains, ``python -m benchmarks.pinn.report`` tabulates and
plots, ``python -m benchmarks.pinn.steptime`` times single steps, and
``python -m benchmarks.pinn.spectrum`` computes the Gram spectrum of a trained network.
"""
