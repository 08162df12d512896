//! Deliberate miscompilations (`Fault::Corrupt`), for testing the tests.

use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::Binary;

use super::{LowerError, Lowerer};
use crate::codegen::kernels::elementwise::ElementwiseSpec;
use crate::codegen::kernels::math::{Bin, KExpr};
use crate::codegen::kernels::nd::BroadcastRows;
use crate::codegen::kernels::typed::{TypedElementwiseSpec, TypedOp};

impl<'g> Lowerer<'g> {
    /// `Fault::Corrupt`: adds 0.25 to the node's first output after its own steps (1 to an
    /// integer one).
    pub(super) fn corrupt(&mut self, id: NodeId) -> Result<(), LowerError> {
        let out = ValueId::new(id, 0);
        let dt = self.g.ty(out).dtype;
        if dt.is_int() {
            let os = self.shape(out)?;
            let name = self.g.node(id).name.clone();
            let mut one = vec![0u8; dt.size()];
            one[0] = 1;
            let one = self.weight(&one, &format!("{name}.fault"));
            let spec = TypedElementwiseSpec {
                dtype: dt,
                dtypes: vec![dt, dt],
                ops: vec![TypedOp::Add],
                // The output, and one broadcast 1.
                rows: BroadcastRows::new(&[os.clone(), vec![]], &os),
            };
            let dst = self.value(out)?;
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[dst, one], &[dst], false, &name, "Fault", 0);
            return Ok(());
        }
        self.f32_only(id, out)?;
        let os = self.shape(out)?;
        let dst = self.value(out)?;
        let spec = ElementwiseSpec::new(
            &os,
            std::slice::from_ref(&os),
            KExpr::bin(Bin::Ir(Binary::Add), KExpr::In(0), KExpr::Const(0.25)),
        );
        let tiles = spec.tiles();
        let name = self.g.node(id).name.clone();
        self.step(Arc::new(spec), tiles, &[dst], &[dst], false, &name, "Fault", 0);
        Ok(())
    }
}
