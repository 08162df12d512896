//! What both Winograd tiles share: the tiling of a map into output tiles, the skew between
//! transformed matrices, and one output plane as the output transforms see it.

use cranelift_codegen::ir::Value;

use crate::codegen::kernels::conv::{DwStep, PlaneEpilogue};

/// The tiling shared by the transforms: an image of `h` x `w` (output `oh` x `ow`, pads `ph`,
/// `pw`) cut into `th` x `tw` tiles of `tile` x `tile` outputs (2 for F(2x2, 3x3), 4 for
/// F(4x4, 3x3)).
#[derive(Clone, Debug)]
pub struct WinoGeom {
    pub tile: usize,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl WinoGeom {
    pub fn th(&self) -> usize {
        self.oh.div_ceil(self.tile)
    }
    pub fn tw(&self) -> usize {
        self.ow.div_ceil(self.tile)
    }
    /// Tiles per image: the GEMM's N.
    pub fn tiles(&self) -> usize {
        self.th() * self.tw()
    }
    /// `nr`-wide panels of tiles.
    pub fn panels(&self, nr: usize) -> usize {
        self.tiles().div_ceil(nr)
    }
    /// The share of tiles whose patch crosses the input's border (F(2x2, 3x3)).
    pub fn border_share(&self) -> f64 {
        let (ty_lo, ty_hi) = WinoGeom::inside(self.h, self.ph, self.th());
        let (tx_lo, tx_hi) = WinoGeom::inside(self.w, self.pw, self.tw());
        1.0 - ((ty_hi - ty_lo) * (tx_hi - tx_lo)) as f64 / self.tiles().max(1) as f64
    }

    /// Tile rows (or columns) whose 4x4 patch lies wholly inside the input: `[lo, hi)`.
    pub(super) fn inside(n: usize, p: usize, tiles: usize) -> (usize, usize) {
        let lo = p.div_ceil(2);
        // Largest t with 2t - p + 3 <= n - 1.
        let hi = if n + p >= 4 { ((n + p - 4) / 2 + 1).min(tiles) } else { 0 };
        (lo.min(hi), hi)
    }
}

/// Bytes between consecutive transformed matrices beyond the matrix itself (see `e_stride`).
pub const E_SKEW: usize = 64;

/// One output plane (image, channel) of a Winograd output transform: where its GEMM outputs M
/// and its output start, its epilogue, and the band's tile rows (counted from the band's first,
/// as the output and residual operands are).
pub(super) struct OutPlane<'a> {
    pub mp: Value,
    pub yp: Value,
    pub epi: PlaneEpilogue,
    pub helpers: Option<Value>,
    pub steps: &'a [DwStep],
    /// Bytes from one e's GEMM outputs to the next.
    pub e_stride: i64,
    pub rows: usize,
    /// Whether the band is the map's last (which holds a partial last tile row).
    pub last: bool,
}
