"""incept: compile ONNX CNNs to machine code for this CPU and run them on numpy arrays.

    import incept
    model = incept.compile("model.onnx")
    outputs = model.run({"input": x})          # {output name: array}
    [y] = model.run(None, {"input": x})        # onnxruntime's form
"""

from ._incept import InceptError, Model, NodeArg, __version__, compile, load

__all__ = ["InceptError", "Model", "NodeArg", "__version__", "compile", "load"]
