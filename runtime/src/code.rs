//! Executable memory for the kernels' machine code.

use memmap2::{Mmap, MmapMut};

use crate::error::RunError;

/// Machine code mapped read + execute. The code is position independent (kernels address
/// everything through their argument table), so it runs wherever it is mapped.
pub struct ExecutableCode {
    map: Option<Mmap>,
}

impl ExecutableCode {
    pub fn new(code: &[u8]) -> Result<ExecutableCode, RunError> {
        if code.is_empty() {
            return Ok(ExecutableCode { map: None });
        }
        let mut m = MmapMut::map_anon(code.len()).map_err(|e| RunError::Code(e.to_string()))?;
        m.copy_from_slice(code);
        let map = m.make_exec().map_err(|e| RunError::Code(e.to_string()))?;
        Ok(ExecutableCode { map: Some(map) })
    }

    /// The address of byte `offset` of the code.
    pub fn address(&self, offset: usize) -> Option<*const u8> {
        let m = self.map.as_ref()?;
        (offset < m.len()).then(|| m.as_ptr().wrapping_add(offset))
    }
}
