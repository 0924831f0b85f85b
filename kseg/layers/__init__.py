"""Keras layers used by kseg models (each file holds one layer or family).

Layers wrapping a compiled ``kseg_ops`` op load the op library only when they run.
"""
