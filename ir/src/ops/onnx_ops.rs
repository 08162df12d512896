//! The standard operators of the ai.onnx domain, to tell a real ONNX operator that incept does
//! not support yet from a name that is not an ONNX operator at all (a typo, or a custom op that
//! lost its domain), so that the import error says which of the two a user is facing.
//!
//! Written from the `onnx` 1.23.2 Python package (ai.onnx opsets up to 28); to regenerate:
//!
//! ```text
//! python -c "import onnx.defs; d = {}
//! for s in onnx.defs.get_all_schemas_with_history():
//!     if s.domain == '': d[s.name] = min(d.get(s.name, 99), s.since_version)
//! print(sorted(d.items()))"
//! ```

/// Every ai.onnx operator with the first opset that defines it, sorted by name (ASCII order).
pub const AI_ONNX_OPS: &[(&str, i64)] = &[
    ("Abs", 1),
    ("Acos", 7),
    ("Acosh", 9),
    ("Add", 1),
    ("AffineGrid", 20),
    ("And", 1),
    ("ArgMax", 1),
    ("ArgMin", 1),
    ("Asin", 7),
    ("Asinh", 9),
    ("Atan", 7),
    ("Atanh", 9),
    ("Attention", 23),
    ("AveragePool", 1),
    ("BatchNormalization", 1),
    ("Bernoulli", 15),
    ("BitCast", 26),
    ("BitShift", 11),
    ("BitwiseAnd", 18),
    ("BitwiseNot", 18),
    ("BitwiseOr", 18),
    ("BitwiseXor", 18),
    ("BlackmanWindow", 17),
    ("Cast", 1),
    ("CastLike", 15),
    ("CausalConvWithState", 27),
    ("Ceil", 1),
    ("Celu", 12),
    ("CenterCropPad", 18),
    ("Clip", 1),
    ("Col2Im", 18),
    ("Compress", 9),
    ("Concat", 1),
    ("ConcatFromSequence", 11),
    ("Constant", 1),
    ("ConstantOfShape", 9),
    ("Conv", 1),
    ("ConvInteger", 10),
    ("ConvTranspose", 1),
    ("Cos", 7),
    ("Cosh", 9),
    ("CumProd", 26),
    ("CumSum", 11),
    ("DFT", 17),
    ("DeformConv", 19),
    ("DepthToSpace", 1),
    ("DequantizeLinear", 10),
    ("Det", 11),
    ("Div", 1),
    ("Dropout", 1),
    ("DynamicQuantizeLinear", 11),
    ("Einsum", 12),
    ("Elu", 1),
    ("Equal", 1),
    ("Erf", 9),
    ("Exp", 1),
    ("Expand", 8),
    ("EyeLike", 9),
    ("Flatten", 1),
    ("Floor", 1),
    ("GRU", 1),
    ("Gather", 1),
    ("GatherElements", 11),
    ("GatherND", 11),
    ("Gelu", 20),
    ("Gemm", 1),
    ("GlobalAveragePool", 1),
    ("GlobalLpPool", 1),
    ("GlobalMaxPool", 1),
    ("Greater", 1),
    ("GreaterOrEqual", 12),
    ("GridSample", 16),
    ("GroupNormalization", 18),
    ("HammingWindow", 17),
    ("HannWindow", 17),
    ("HardSigmoid", 1),
    ("HardSwish", 14),
    ("Hardmax", 1),
    ("Identity", 1),
    ("If", 1),
    ("ImageDecoder", 20),
    ("InstanceNormalization", 1),
    ("IsInf", 10),
    ("IsNaN", 9),
    ("LRN", 1),
    ("LSTM", 1),
    ("LayerNormalization", 17),
    ("LeakyRelu", 1),
    ("Less", 1),
    ("LessOrEqual", 12),
    ("LinearAttention", 27),
    ("Log", 1),
    ("LogSoftmax", 1),
    ("Loop", 1),
    ("LpNormalization", 1),
    ("LpPool", 1),
    ("MatMul", 1),
    ("MatMulInteger", 10),
    ("Max", 1),
    ("MaxPool", 1),
    ("MaxRoiPool", 1),
    ("MaxUnpool", 9),
    ("Mean", 1),
    ("MeanVarianceNormalization", 9),
    ("MelWeightMatrix", 17),
    ("Min", 1),
    ("Mish", 18),
    ("Mod", 10),
    ("Mul", 1),
    ("Multinomial", 7),
    ("Neg", 1),
    ("NegativeLogLikelihoodLoss", 12),
    ("NonMaxSuppression", 10),
    ("NonZero", 9),
    ("Not", 1),
    ("OneHot", 9),
    ("Optional", 15),
    ("OptionalGetElement", 15),
    ("OptionalHasElement", 15),
    ("Or", 1),
    ("PRelu", 1),
    ("Pad", 1),
    ("Pow", 1),
    ("QLinearConv", 10),
    ("QLinearMatMul", 10),
    ("QuantizeLinear", 10),
    ("RMSNormalization", 23),
    ("RNN", 1),
    ("RandomNormal", 1),
    ("RandomNormalLike", 1),
    ("RandomUniform", 1),
    ("RandomUniformLike", 1),
    ("Range", 11),
    ("Reciprocal", 1),
    ("ReduceL1", 1),
    ("ReduceL2", 1),
    ("ReduceLogSum", 1),
    ("ReduceLogSumExp", 1),
    ("ReduceMax", 1),
    ("ReduceMean", 1),
    ("ReduceMin", 1),
    ("ReduceProd", 1),
    ("ReduceSum", 1),
    ("ReduceSumSquare", 1),
    ("RegexFullMatch", 20),
    ("Relu", 1),
    ("Reshape", 1),
    ("Resize", 10),
    ("ReverseSequence", 10),
    ("RoiAlign", 10),
    ("RotaryEmbedding", 23),
    ("Round", 11),
    ("STFT", 17),
    ("Scan", 8),
    ("Scatter", 9),
    ("ScatterElements", 11),
    ("ScatterND", 11),
    ("Selu", 1),
    ("SequenceAt", 11),
    ("SequenceConstruct", 11),
    ("SequenceEmpty", 11),
    ("SequenceErase", 11),
    ("SequenceInsert", 11),
    ("SequenceLength", 11),
    ("SequenceMap", 17),
    ("Shape", 1),
    ("Shrink", 9),
    ("Sigmoid", 1),
    ("Sign", 9),
    ("Sin", 7),
    ("Sinh", 9),
    ("Size", 1),
    ("Slice", 1),
    ("Softmax", 1),
    ("SoftmaxCrossEntropyLoss", 12),
    ("Softplus", 1),
    ("Softsign", 1),
    ("SpaceToDepth", 1),
    ("Split", 1),
    ("SplitToSequence", 11),
    ("Sqrt", 1),
    ("Squeeze", 1),
    ("StringConcat", 20),
    ("StringNormalizer", 10),
    ("StringSplit", 20),
    ("Sub", 1),
    ("Sum", 1),
    ("SwiGLU", 28),
    ("Swish", 24),
    ("Tan", 7),
    ("Tanh", 1),
    ("TensorScatter", 24),
    ("TfIdfVectorizer", 9),
    ("ThresholdedRelu", 10),
    ("Tile", 1),
    ("TopK", 1),
    ("Transpose", 1),
    ("Trilu", 14),
    ("Unique", 11),
    ("Unsqueeze", 1),
    ("Upsample", 1),
    ("Where", 9),
    ("Xor", 1),
];

/// The first ai.onnx opset that defines `op_type`, or `None` if it is not an ONNX operator.
pub fn first_opset(op_type: &str) -> Option<i64> {
    AI_ONNX_OPS.binary_search_by(|(name, _)| name.cmp(&op_type)).ok().map(|i| AI_ONNX_OPS[i].1)
}

/// The ONNX operator a misspelt name most likely meant: the same name in another case, or one
/// within two edits (`Rleu` -> `Relu`). `None` when nothing is that close.
pub fn closest(op_type: &str) -> Option<&'static str> {
    let lower = op_type.to_lowercase();
    AI_ONNX_OPS
        .iter()
        .map(|(name, _)| (typo_distance(&lower, &name.to_lowercase()), *name))
        .filter(|&(d, _)| d <= 2 && d < op_type.chars().count())
        .min()
        .map(|(_, name)| name)
}

/// Edits from `a` to `b`, where swapping two neighbouring letters counts as one (the commonest
/// typo: `Rleu` is one edit from `Relu`, two from `Elu`).
fn typo_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=b.len() {
        d[0][j] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Why an ai.onnx node of type `op_type`, which incept has no implementation of, cannot be
/// imported; `opset` is the model's ai.onnx opset.
pub fn unsupported_reason(op_type: &str, opset: Option<i64>) -> String {
    match (first_opset(op_type), opset) {
        (Some(since), Some(v)) if since > v => format!(
            "ONNX operator '{op_type}' is not supported by incept yet (nor is it in opset {v}: it was introduced in opset {since})"
        ),
        (Some(_), Some(v)) => format!("ONNX operator '{op_type}' (opset {v}) is not supported by incept yet"),
        (Some(_), None) => format!("ONNX operator '{op_type}' is not supported by incept yet"),
        (None, _) => {
            let hint = closest(op_type).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
            format!("'{op_type}' is not an ONNX operator{hint}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_complete_enough_to_trust() {
        assert!(AI_ONNX_OPS.windows(2).all(|w| w[0].0 < w[1].0), "not sorted: binary search would miss names");
        assert_eq!(AI_ONNX_OPS.len(), 203);
        // Every op incept implements is an ONNX operator, defined no later than incept says.
        for info in crate::ops::OPS {
            let since = first_opset(info.name).unwrap_or_else(|| panic!("{} is missing", info.name));
            assert!(since <= info.since.max(1), "{}: {since} > {}", info.name, info.since);
        }
    }

    #[test]
    fn reasons_tell_missing_ops_from_non_ops() {
        assert_eq!(first_opset("Einsum"), Some(12));
        assert_eq!(first_opset("einsum"), None);
        assert_eq!(
            unsupported_reason("Einsum", Some(17)),
            "ONNX operator 'Einsum' (opset 17) is not supported by incept yet"
        );
        assert!(unsupported_reason("Gelu", Some(17)).contains("introduced in opset 20"));
        assert_eq!(unsupported_reason("Rleu", Some(17)), "'Rleu' is not an ONNX operator (did you mean 'Relu'?)");
        assert_eq!(unsupported_reason("relu", Some(17)), "'relu' is not an ONNX operator (did you mean 'Relu'?)");
        assert_eq!(unsupported_reason("FooBarBaz", Some(17)), "'FooBarBaz' is not an ONNX operator");
        assert_eq!(closest("Conv2D"), Some("Conv"));
        assert_eq!(closest("MyCustomOp"), None);
    }
}
