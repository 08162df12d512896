//! What both Winograd tiles share: the tiling of a map into output tiles, the skew between
//! transformed matrices, and one output plane as the output transforms see it.

use cranelift_codegen::ir::Value;

use crate::codegen::builder::Kb;

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

/// Tiles transformed together: one f32x4 lane each.
pub const Q: usize = 4;

/// Channels per step tile of an input transform: a 28x28 map has 7 panels of 32 tiles, too few
/// to share among threads; chunks of channels make more, and each chunk still writes contiguous
/// lines.
const CHANNEL_CHUNK: usize = 16;

/// What an input transform writes, for either tile: `V[img][e][j][c][lane] = (B^T d B)[e]` for
/// tile `nr*j + lane` of channel c, laid out as the GEMM's packed B (one batch per (img, e),
/// panels `nr` tiles wide). One step tile per (image, panel of tiles, chunk of channels).
#[derive(Clone, Debug)]
pub struct WinoInput {
    pub g: WinoGeom,
    pub c: usize,
    /// Panel width: the GEMM tier's NR (a multiple of 4).
    pub nr: usize,
    /// Tiles per image of a band (None: all): a big map is transformed, multiplied and
    /// transformed back a band of tile rows at a time, so that its buffers stay in cache. Where
    /// the band lies is in the tile table alone, so bands of a size share the kernel.
    pub band_tiles: Option<usize>,
}

impl WinoInput {
    /// Tiles per image transformed.
    pub fn tiles_per_image(&self) -> usize {
        self.band_tiles.unwrap_or(self.g.tiles())
    }

    /// `nr`-wide panels of the band's tiles.
    pub fn panels(&self) -> usize {
        self.tiles_per_image().div_ceil(self.nr)
    }

    /// Transformed values per tile: 16 for F(2x2, 3x3), 36 for F(4x4, 3x3).
    pub fn es(&self) -> usize {
        (self.g.tile + 2) * (self.g.tile + 2)
    }

    pub fn bytes(&self) -> usize {
        self.g.n * self.es() * self.e_stride()
    }

    /// Bytes from one transformed value's matrix to the next: a line more than the matrix, so
    /// that the stores of a quad land in as many cache sets as it has values (at the matrix
    /// size, often a multiple of 4 KiB, they fell into one set and evicted each other).
    pub fn e_stride(&self) -> usize {
        self.panels() * self.c * self.nr * 4 + E_SKEW
    }

    /// Step tiles: one per image, panel and chunk of channels.
    pub fn tiles(&self) -> usize {
        self.g.n * self.panels() * self.channel_chunks()
    }

    /// Chunks of channels.
    pub fn channel_chunks(&self) -> usize {
        self.c.div_ceil(CHANNEL_CHUNK)
    }

    /// In the code, step tile `t`'s image, panel of tiles and channels `[c_lo, c_hi)`.
    pub fn emit_step_tile(&self, kb: &mut Kb, t: Value) -> (Value, Value, Value, Value) {
        let (rest, chunk) = kb.divmod(t, self.channel_chunks() as i64);
        let (img, panel) = kb.divmod(rest, self.panels() as i64);
        let c_lo = kb.muli(chunk, CHANNEL_CHUNK as i64);
        let c_hi = {
            let e = kb.addi(c_lo, CHANNEL_CHUNK as i64);
            kb.mini(e, self.c as i64)
        };
        (img, panel, c_lo, c_hi)
    }

    /// Quads of tiles: panels x nr / 4.
    pub fn quads(&self) -> usize {
        self.panels() * self.nr / Q
    }
}
