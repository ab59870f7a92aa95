"""What a frugalml estimator that writes its own ONNX nodes (``torch_mlp``, ``tree_graph``) registers with skl2onnx:
the converter pair, and the classifier's label output."""

from __future__ import annotations

import numpy as np


def register_converters(classifier, regressor, alias: str, convert) -> None:
    """Teach skl2onnx a frugalml classifier/regressor pair that writes its own nodes (``convert``): a classifier
    outputs (label, probabilities), a regressor one column, as skl2onnx's linear models do."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (calculate_linear_classifier_output_shapes,
                                                  calculate_linear_regressor_output_shapes)

    update_registered_converter(classifier, f"Frugal{alias}Classifier", calculate_linear_classifier_output_shapes,
                                convert, options={"zipmap": [True, False, "columns"], "nocl": [True, False]})
    update_registered_converter(regressor, f"Frugal{alias}Regressor", calculate_linear_regressor_output_shapes,
                                convert)

def add_label_output(scope, container, classes, index: str, output: str) -> None:
    """The classifier's label output: ``classes[index]`` (int64 or strings), ``index`` an (N,) class position."""
    from onnx import TensorProto
    from onnx.numpy_helper import from_array

    classes = np.asarray(classes)
    names = scope.get_unique_variable_name("classes")
    if classes.dtype.kind in "iub":
        container.add_initializer(names, None, None, from_array(classes.astype(np.int64), names))
    else:
        container.add_initializer(names, TensorProto.STRING, [len(classes)], [str(c).encode() for c in classes])
    container.add_node("Gather", [names, index], output, axis=0, name=scope.get_unique_operator_name("Gather"))
