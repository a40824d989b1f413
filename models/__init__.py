"""Falaj model families, metrics, ONNX export and the single training entrypoint.

Run training with ``python -m models.train``. Importing this package is cheap: LightGBM and
PyTorch are only imported by the modules that need them.
"""
