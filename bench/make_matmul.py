#!/usr/bin/env python3
"""Writes a 1024x1024x1024 MatMul model (input A, constant B) for `incept bench`.

    python3 bench/make_matmul.py OUT.onnx [N]
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
rng = np.random.default_rng(0)
b = numpy_helper.from_array(rng.uniform(-1, 1, (n, n)).astype(np.float32), "B")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["A", "B"], ["C"], name="matmul")],
    "matmul",
    [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
    [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
    [b],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, out)
