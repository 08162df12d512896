"""Writes mini_resnet_dynamic.onnx: tests/fixtures/mini_resnet.onnx with its batch dimension made
symbolic ('N'), for the tests of compile(shapes=...). Needs the onnx package (not a test
dependency: the output is committed).

    python make_dynamic_batch.py
"""

from pathlib import Path

import onnx

here = Path(__file__).parent
model = onnx.load(str(here / "../../../tests/fixtures/mini_resnet.onnx"))
for value in list(model.graph.input) + list(model.graph.output):
    value.type.tensor_type.shape.dim[0].dim_param = "N"
onnx.checker.check_model(model)
onnx.save(model, str(here / "mini_resnet_dynamic.onnx"))
