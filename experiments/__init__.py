"""The experiment harness (installed as `tfgeo.experiments`): data, base-network
training, evaluation, compute accounting, resumable run state, result files,
plots, and one module per application that runs its study.

The core library (`tfgeo`) never imports this package; the runners
(`runners/`, `tfgeo.runners`) are thin command lines over it.
"""
