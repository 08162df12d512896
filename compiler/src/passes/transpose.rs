//! Transpose clean-ups: consecutive Transposes compose, inverse pairs and identity permutations
//! vanish. (Transposes of constants fold in const-fold.)

use incept_ir::OpError;
use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::{Op, Transpose};

use crate::passes::util::can_stand_in_for;
use crate::passes::{Pass, PassContext, Patch};

pub struct FoldTranspose;

impl Pass for FoldTranspose {
    fn name(&self) -> &'static str {
        "fold-transpose"
    }
    fn description(&self) -> &'static str {
        "compose consecutive Transposes; drop identity permutations and inverse pairs"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let Op::Transpose(t) = &node.op else { return Ok(None) };
        let Some(x) = node.inputs()[0] else { return Ok(None) };
        // Compose with a Transpose feeding this one: x = T(z, p1); y = T(x, p2) = T(z, p1[p2[i]]).
        let (source, perm) = match &g.node(x.node).op {
            Op::Transpose(inner) => {
                let z = g.node(x.node).inputs()[0];
                let Some(z) = z else { return Ok(None) };
                (z, t.perm.iter().map(|&i| inner.perm[i]).collect::<Vec<usize>>())
            }
            _ => (x, t.perm.clone()),
        };
        let identity = perm.iter().enumerate().all(|(i, &p)| i == p);
        let out = ValueId::new(id, 0);
        let mut p = Patch::new();
        if identity {
            if !can_stand_in_for(g, out, source) {
                return Ok(None);
            }
            p.replace(out, source);
        } else if source != x {
            let y = p.add(&node.name, Op::Transpose(Transpose { perm }), vec![source.into()]);
            p.replace(out, y);
        } else {
            return Ok(None);
        }
        Ok(Some(p))
    }
}
