//! Opset normalisation: older op versions are rewritten into the form of the newest opset, so the
//! rest of incept sees one form per op. Attributes that later became inputs (Clip min/max, Pad
//! pads, Slice starts/ends, Squeeze/Unsqueeze/Split/Reduce axes, Upsample scales) become constant
//! inputs; changed defaults (Softmax axis, Resize-10 rounding) become explicit attributes.

use crate::attrs::{AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::{OpError, Result};
use crate::graph::{Graph, ValueId};
use crate::invalid;
use crate::tensor::Tensor;

/// One node being imported.
pub struct Upgrade<'a> {
    pub graph: &'a mut Graph,
    pub node: &'a str,
    pub opset: i64,
    pub attrs: &'a mut Attrs,
    pub inputs: &'a mut Vec<Option<ValueId>>,
}

impl Upgrade<'_> {
    fn add_const(&mut self, what: &str, t: Tensor) -> Result<ValueId, OpError> {
        let name = self.graph.fresh_name(&format!("{}/{what}", self.node));
        self.graph.add_const(&name, t).map_err(|e| OpError::Invalid(e.to_string()))
    }

    fn set_input(&mut self, slot: usize, v: Option<ValueId>) {
        if self.inputs.len() <= slot {
            self.inputs.resize(slot + 1, None);
        }
        self.inputs[slot] = v;
    }

    fn input_dtype(&self) -> Result<DType, OpError> {
        match self.inputs.first().copied().flatten() {
            Some(v) => Ok(self.graph.ty(v).dtype),
            None => invalid!("input 0 is required but missing"),
        }
    }

    /// A scalar of the input's float type.
    fn scalar_like_input(&self, v: f32) -> Result<Tensor, OpError> {
        Ok(match self.input_dtype()? {
            DType::F64 => Tensor::scalar(v as f64),
            DType::F32 => Tensor::scalar(v),
            d => return Err(OpError::Unsupported(format!("this op version on {d}"))),
        })
    }

    /// Moves an ints attribute to a constant i64 input at `slot`.
    fn ints_to_input(&mut self, attr: &str, slot: usize) -> Result<(), OpError> {
        if let Some(v) = self.attrs.opt_ints(attr)? {
            let t = Tensor::from_vec(vec![v.len()], v);
            let c = self.add_const(attr, t)?;
            self.set_input(slot, Some(c));
        }
        Ok(())
    }

    /// Before opset 7, binary ops broadcast only when `broadcast = 1`, aligning B with A at `axis`
    /// (suffix-aligned when absent, which is what numpy does). A B aligned elsewhere is reshaped
    /// with trailing 1s so that numpy broadcasting gives the same result.
    fn legacy_broadcast(&mut self) -> Result<(), OpError> {
        let broadcast = self.attrs.int("broadcast", 0)? != 0;
        let axis = self.attrs.opt_int("axis")?;
        let (Some(Some(a)), Some(Some(b))) = (self.inputs.first().copied(), self.inputs.get(1).copied()) else {
            invalid!("expects 2 inputs");
        };
        let (ra, rb) = (self.graph.ty(a).rank(), self.graph.ty(b).rank());
        if !broadcast || axis.is_none() {
            return Ok(());
        }
        let axis = crate::ops::norm_axis(axis.unwrap_or(0), ra)?;
        if axis + rb > ra {
            invalid!("B of rank {rb} does not fit into A of rank {ra} at axis {axis}");
        }
        if axis + rb == ra {
            return Ok(());
        }
        let mut target: Vec<i64> = Vec::with_capacity(ra - axis);
        for d in &self.graph.ty(b).shape {
            target.push(crate::ops::need_known(d, "dim of B")? as i64);
        }
        target.resize(ra - axis, 1);
        self.reshape_input(1, b, target)
    }

    /// Before opset 7 a 1-D PRelu slope of size C applied per channel (dim 1); numpy broadcasting
    /// needs it as `[C, 1, ...]`.
    fn legacy_prelu_slope(&mut self) -> Result<(), OpError> {
        let (Some(Some(x)), Some(Some(s))) = (self.inputs.first().copied(), self.inputs.get(1).copied()) else {
            invalid!("expects 2 inputs");
        };
        let (xt, st) = (self.graph.ty(x).clone(), self.graph.ty(s).clone());
        if st.rank() != 1 || xt.rank() < 3 || st.shape[0] == crate::shape::Dim::Known(1) {
            return Ok(());
        }
        let c = crate::ops::need_known(&st.shape[0], "slope size")? as i64;
        let mut target = vec![c];
        target.resize(xt.rank() - 1, 1);
        self.reshape_input(1, s, target)
    }

    /// Replaces input `slot` by `value` reshaped to `target`.
    fn reshape_input(&mut self, slot: usize, value: ValueId, target: Vec<i64>) -> Result<(), OpError> {
        let shape = self.add_const("broadcast_shape", Tensor::from_vec(vec![target.len()], target))?;
        let name = self.graph.fresh_name(&format!("{}/broadcast", self.node));
        let id = self
            .graph
            .add_node(
                &name,
                crate::ops::Op::Reshape(crate::ops::Reshape { allowzero: false }),
                vec![Some(value), Some(shape)],
                vec![name.clone()],
            )
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        self.inputs[slot] = Some(ValueId::new(id, 0));
        Ok(())
    }

    /// Rewrites the node into its newest form; returns the op type to build.
    pub fn run(mut self, op_type: &str) -> Result<&'static str, OpError> {
        let op = self.opset;
        match op_type {
            "Clip" if op < 11 => {
                for (attr, slot) in [("min", 1), ("max", 2)] {
                    if let Some(v) = self.attrs.opt_float(attr)? {
                        let t = self.scalar_like_input(v)?;
                        let c = self.add_const(attr, t)?;
                        self.set_input(slot, Some(c));
                    }
                }
            }
            "Pad" if op < 11 => {
                let pads = self
                    .attrs
                    .opt_ints("pads")?
                    .ok_or_else(|| OpError::Invalid("attribute 'pads' is required".into()))?;
                let t = Tensor::from_vec(vec![pads.len()], pads);
                let p = self.add_const("pads", t)?;
                self.set_input(1, Some(p));
                let value = self.attrs.float("value", 0.0)?;
                if value != 0.0 {
                    let t = self.scalar_like_input(value)?;
                    let c = self.add_const("value", t)?;
                    self.set_input(2, Some(c));
                }
            }
            "Slice" if op < 10 => {
                for (attr, slot) in [("starts", 1), ("ends", 2), ("axes", 3)] {
                    self.ints_to_input(attr, slot)?;
                }
            }
            "Squeeze" | "Unsqueeze" | "Split" if op < 13 => {
                let attr = if op_type == "Split" { "split" } else { "axes" };
                self.ints_to_input(attr, 1)?;
            }
            "ReduceSum" if op < 13 => self.ints_to_input("axes", 1)?,
            "TopK" if op < 10 => {
                let k = self.attrs.opt_int("k")?.ok_or_else(|| OpError::Invalid("attribute 'k' is required".into()))?;
                let c = self.add_const("k", Tensor::from_vec(vec![1], vec![k]))?;
                self.set_input(1, Some(c));
            }
            "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2" | "ReduceSumSquare"
            | "ReduceLogSum" | "ReduceLogSumExp"
                if op < 18 =>
            {
                self.ints_to_input("axes", 1)?
            }
            "Softmax" | "LogSoftmax" if op < 13 => {
                // Before 13: default axis 1 and the input is flattened to 2-D at the axis.
                if !self.attrs.contains("axis") {
                    self.attrs.insert("axis", AttrValue::Int(1));
                }
                self.attrs.insert("coerce_2d", AttrValue::Int(1));
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" if op < 7 => self.legacy_broadcast()?,
            "Gemm" if op < 7 => self.attrs.ignore("broadcast"),
            "PRelu" if op < 7 => self.legacy_prelu_slope()?,
            "BatchNormalization" if op < 7 => self.attrs.ignore("is_test"),
            "Dropout" => {
                if let Some(mode) = self.inputs.get(2).copied().flatten() {
                    let training = match self.graph.const_value(mode) {
                        Some(t) => t.to_f64s()?.first().copied().unwrap_or(0.0) != 0.0,
                        None => {
                            return Err(OpError::Unsupported(
                                "Dropout with a training_mode computed at run time".into(),
                            ));
                        }
                    };
                    // In training mode only a ratio of 0 is deterministic (nothing is dropped).
                    let ratio = match self.inputs.get(1).copied().flatten() {
                        Some(r) => {
                            self.graph.const_value(r).and_then(|t| t.to_f64s().ok()).and_then(|v| v.first().copied())
                        }
                        None => Some(0.5),
                    };
                    if training && ratio != Some(0.0) {
                        return Err(OpError::Unsupported(
                            "Dropout in training mode (random) with a nonzero ratio".into(),
                        ));
                    }
                }
                self.inputs.truncate(1);
            }
            "Resize" if op < 11 => {
                // Resize-10: (X, scales), asymmetric coordinates.
                let scales = self.inputs.get(1).copied().flatten();
                self.inputs.truncate(1);
                self.set_input(2, scales);
                self.attrs.insert("coordinate_transformation_mode", AttrValue::Str("asymmetric".into()));
                self.attrs.insert("nearest_mode", AttrValue::Str("simple".into()));
            }
            "Upsample" => {
                let scales = if op < 9 {
                    let s = self
                        .attrs
                        .opt_floats("scales")?
                        .ok_or_else(|| OpError::Invalid("attribute 'scales' is required".into()))?;
                    let t = Tensor::from_vec(vec![s.len()], s);
                    Some(self.add_const("scales", t)?)
                } else {
                    self.inputs.get(1).copied().flatten()
                };
                self.inputs.truncate(1);
                self.set_input(2, scales);
                self.attrs.insert("coordinate_transformation_mode", AttrValue::Str("asymmetric".into()));
                self.attrs.insert("nearest_mode", AttrValue::Str("simple".into()));
                return Ok("Resize");
            }
            _ => {}
        }
        Ok(crate::ops::op_info(op_type).map_or("", |i| i.name))
    }
}
