//! Elementwise ops: f32 expressions (unary, binary, clip, variadic, fused chains), typed
//! integer and f64 arithmetic, comparisons and logic, Cast.

use std::sync::Arc;

use incept_ir::DType;
use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::{Activation, Binary, Op, Variadic};

use super::{BufRef, LowerError, Lowerer};
use crate::codegen::Tier;
use crate::codegen::kernels::elementwise::ElementwiseSpec;
use crate::codegen::kernels::logic::{LogicOp, LogicSpec};
use crate::codegen::kernels::math::{Bin, KExpr};
use crate::codegen::kernels::nd::BroadcastRows;
use crate::codegen::kernels::typed::{CastSpec, TypedElementwiseSpec, TypedOp};

impl<'g> Lowerer<'g> {
    /// Unary, binary, clip, variadic and fused elementwise ops.
    pub(super) fn elementwise(&mut self, id: NodeId) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let ins: Vec<ValueId> = node.input_values().collect();
        let out_ty = self.g.ty(ValueId::new(id, 0)).dtype;
        if out_ty != DType::F32 || ins.iter().any(|&v| self.g.ty(v).dtype != DType::F32) {
            return self.typed_elementwise(id, out_ty);
        }
        let (expr, inputs): (KExpr, Vec<ValueId>) = match &node.op {
            Op::Unary(u) => (KExpr::act(Activation::Unary(u.clone()), KExpr::In(0)), vec![ins[0]]),
            Op::Binary(b) => (KExpr::bin(Bin::Ir(*b), KExpr::In(0), KExpr::In(1)), ins.clone()),
            Op::Clip(_) => {
                // The lower bound, then the upper (so lo > hi gives hi). A constant bound folds
                // into the kernel; one computed at run time is read as a broadcast scalar.
                let mut e = KExpr::In(0);
                let mut inputs = vec![ins[0]];
                for (i, b) in [(1, Bin::AtLeast), (2, Bin::AtMost)] {
                    let Some(v) = self.in_val(id, i) else { continue };
                    let rhs = match self.konst(v) {
                        Some(t) => match t.to_f64s().ok().and_then(|x| x.first().copied()) {
                            Some(c) => KExpr::Const(c as f32),
                            None => continue,
                        },
                        None => {
                            inputs.push(v);
                            KExpr::In(inputs.len() - 1)
                        }
                    };
                    e = KExpr::bin(b, e, rhs);
                }
                (e, inputs)
            }
            Op::Elementwise(e) => (KExpr::from_ir(&e.expr), ins.clone()),
            Op::Variadic(v) => {
                let b = match v {
                    Variadic::Sum => Bin::Ir(Binary::Add),
                    Variadic::Max => Bin::Max,
                    Variadic::Min => Bin::Min,
                };
                let mut e = KExpr::In(0);
                for i in 1..ins.len() {
                    e = KExpr::bin(b, e, KExpr::In(i));
                }
                (e, ins.clone())
            }
            _ => return Err(self.unsupported(id, "this op as elementwise")),
        };
        let shapes = inputs.iter().map(|&v| self.shape(v)).collect::<Result<Vec<_>, _>>()?;
        self.emit_elementwise(id, &inputs, &shapes, expr)
    }

    pub(super) fn emit_elementwise(
        &mut self,
        id: NodeId,
        inputs: &[ValueId],
        shapes: &[Vec<usize>],
        expr: KExpr,
    ) -> Result<(), LowerError> {
        let out = ValueId::new(id, 0);
        self.f32_only(id, out)?;
        for &v in inputs {
            self.f32_only(id, v)?;
        }
        let os = self.shape(out)?;
        let spec = ElementwiseSpec::new(&os, shapes, expr);
        let helpers = spec.needs_helpers();
        let srcs = inputs.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let dst = self.define(out)?;
        let name = self.g.node(id).name.clone();
        let op = self.g.node(id).op.name().to_string();
        self.elementwise_step(spec, &srcs, dst, helpers, &name, &op);
        // Element i of an operand of the output's shape is read only for output element i.
        for (src, shape) in srcs.iter().zip(shapes) {
            if *shape == os {
                self.allow_in_place(*src, dst);
            }
        }
        Ok(())
    }

    /// The step of an f32 elementwise kernel: its rows on the AVX-512 row kernel where the tier
    /// has it and the kernel computes the expression (`codegen/wide_expr.rs`).
    pub(super) fn elementwise_step(
        &mut self,
        mut spec: ElementwiseSpec,
        srcs: &[BufRef],
        dst: BufRef,
        helpers: bool,
        name: &str,
        op: &str,
    ) {
        let wide = if self.tier == Tier::Avx512 { spec.wide_kernel() } else { None };
        let kernel = wide.map(|k| self.kernel(Arc::new(k)));
        spec.wide = kernel.is_some();
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, srcs, &[dst], helpers, name, op, 0);
        if let (Some(k), Some(step)) = (kernel, self.out.steps.last_mut()) {
            step.operands.push(super::LOperand::Kernel(k));
        }
    }

    /// Integer and f64 arithmetic, and Pow with an integer operand (see `TypedElementwiseSpec`).
    fn typed_elementwise(&mut self, id: NodeId, dtype: DType) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let ins: Vec<ValueId> = node.input_values().collect();
        let op = match &node.op {
            // Clip: the lower bound, then the upper (absent bounds skipped).
            Op::Clip(_) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let (mut inputs, mut ops) = (vec![x], vec![]);
                for (i, op) in [(1, TypedOp::AtLeast), (2, TypedOp::AtMost)] {
                    if let Some(b) = self.in_val(id, i) {
                        inputs.push(b);
                        ops.push(op);
                    }
                }
                return self.typed_chain(id, dtype, &inputs, ops);
            }
            Op::Binary(Binary::Add) | Op::Variadic(Variadic::Sum) => TypedOp::Add,
            Op::Binary(Binary::Sub) => TypedOp::Sub,
            Op::Binary(Binary::Mul) => TypedOp::Mul,
            Op::Binary(Binary::Div) => TypedOp::Div,
            Op::Variadic(Variadic::Max) => TypedOp::Max,
            Op::Variadic(Variadic::Min) => TypedOp::Min,
            Op::Binary(Binary::Pow) => TypedOp::Pow,
            other => {
                return Err(
                    self.unsupported(id, format!("{} on {dtype} data (the JIT computes it in f32 only)", other.name()))
                );
            }
        };
        self.typed_chain(id, dtype, &ins, vec![op; ins.len() - 1])
    }

    /// `ops[k]` applied in turn to the running value and input k + 1, all of one dtype.
    fn typed_chain(&mut self, id: NodeId, dtype: DType, ins: &[ValueId], ops: Vec<TypedOp>) -> Result<(), LowerError> {
        use DType::*;
        let name = self.g.node(id).name.clone();
        let numeric = |d: DType| matches!(d, F32 | F64 | I8 | I16 | I32 | I64 | U8 | U16 | U32 | U64);
        let dtypes: Vec<DType> = ins.iter().map(|&v| self.g.ty(v).dtype).collect();
        // f32 comes here only as Pow's base with an integer exponent.
        let pow = ops.contains(&TypedOp::Pow);
        if !numeric(dtype) || (dtype == F32 && !pow) {
            return Err(self.unsupported(id, format!("{dtype} arithmetic")));
        }
        for (k, &d) in dtypes.iter().enumerate() {
            // Pow's exponent may have any numeric type; everything else shares the output's.
            let exponent = k > 0 && ops[k - 1] == TypedOp::Pow;
            if d != dtype && !(exponent && numeric(d)) {
                return Err(self.unsupported(id, format!("mixed {d} and {dtype} operands")));
            }
        }
        let out = ValueId::new(id, 0);
        let os = self.shape(out)?;
        let shapes = ins.iter().map(|&v| self.shape(v)).collect::<Result<Vec<_>, _>>()?;
        let spec = TypedElementwiseSpec { dtype, dtypes, ops, rows: BroadcastRows::new(&shapes, &os) };
        let srcs = ins.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        let helpers = spec.needs_helpers();
        let op_name = self.g.node(id).op.name().to_string();
        self.step(Arc::new(spec), tiles, &srcs, &[dst], helpers, &name, &op_name, 0);
        Ok(())
    }

    /// Comparisons, logic, Where and Mod: one scalar kernel over the broadcast inputs.
    pub(super) fn logic(&mut self, id: NodeId, op: LogicOp) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let ins: Vec<ValueId> = self.g.node(id).input_values().collect();
        let out = ValueId::new(id, 0);
        let os = self.shape(out)?;
        let dtypes: Vec<DType> = ins.iter().map(|&v| self.g.ty(v).dtype).collect();
        if let Some(d) = dtypes.iter().find(|d| matches!(d, DType::F16)) {
            return Err(self.unsupported(id, format!("{d} data")));
        }
        let shapes = ins.iter().map(|&v| self.shape(v)).collect::<Result<Vec<_>, _>>()?;
        let rows = BroadcastRows::new(&shapes, &os);
        let spec = LogicSpec { op, dtypes, out: self.g.ty(out).dtype, rows };
        let srcs = ins.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let dst = self.define(out)?;
        let (tiles, helpers) = (spec.tiles(), spec.needs_helpers());
        let op_name = self.g.node(id).op.name().to_string();
        self.step(Arc::new(spec), tiles, &srcs, &[dst], helpers, &name, &op_name, 0);
        Ok(())
    }

    /// Cast between numeric types (a view when the type does not change).
    pub(super) fn cast(&mut self, id: NodeId, to: DType) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let from = self.g.ty(x).dtype;
        if from == to {
            let r = self.value(x)?;
            self.values.insert(out, r);
            return Ok(());
        }
        if from == DType::F16 || to == DType::F16 {
            return Err(self.unsupported(id, format!("Cast from {from} to {to}")));
        }
        let spec = CastSpec { from, to, n: self.shape(x)?.iter().product() };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, "Cast", 0);
        Ok(())
    }
}
