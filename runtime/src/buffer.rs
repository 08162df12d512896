//! 64-byte aligned byte buffers (arenas, weights, outputs).

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zero-initialised, 64-byte aligned byte buffer.
#[derive(Clone, Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf { lines: vec![Line([0; 64]); len.div_ceil(64)], len }
    }

    /// An empty buffer with room for `bytes` bytes before it reallocates.
    pub fn with_capacity(bytes: usize) -> AlignedBuf {
        AlignedBuf { lines: Vec::with_capacity(bytes.div_ceil(64)), len: 0 }
    }

    /// Grows (zero-filled) or shrinks to `len` bytes.
    pub fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(64), Line([0; 64]));
        if len > self.len {
            // Bytes past the old end in its last line may hold data from before a shrink.
            let old = self.len;
            self.len = len;
            self.as_mut_slice()[old..].fill(0);
        } else {
            self.len = len;
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `lines` holds at least `len` initialised bytes, contiguously.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.lines.as_ptr().cast()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr().cast()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// A plan's packed weights: owned (a plan compiled in this process), or a read-only region of a
/// memory-mapped artifact, used in place (page aligned, so every 64-byte alignment the kernels
/// rely on holds).
#[derive(Clone)]
pub enum Weights {
    Owned(AlignedBuf),
    Mapped { map: std::sync::Arc<memmap2::Mmap>, offset: usize, len: usize },
}

impl Weights {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Weights::Owned(b) => b.as_slice(),
            Weights::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<AlignedBuf> for Weights {
    fn from(b: AlignedBuf) -> Weights {
        Weights::Owned(b)
    }
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if matches!(self, Weights::Owned(_)) { "owned" } else { "mapped" };
        write!(f, "Weights({} bytes, {how})", self.len())
    }
}
