"""Explaining predictions: token attributions (integrated gradients, gradient × input, occlusion),
their faithfulness (ERASER's comprehensiveness and sufficiency, a deletion curve) and renderings.

Takes a model as ModelFns and a trained run as a duck-typed `bigjax.runs.Run`; imports no data
sources, training or checkpoint code (docs/guides/contributing.md, "The dependency direction").
"""
