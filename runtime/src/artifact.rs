//! The `.incept` artifact: a compiled plan in one file, so that an application loads machine code
//! and weights instead of compiling at start-up.
//!
//! Layout (every integer little-endian):
//!
//! ```text
//! 0    magic "INCEPT\0\x1a"                       8 bytes
//! 8    format major, minor                        u16, u16
//! 12   0x01020304 as the writer stored it         u32 (byte order check)
//! 16   pointer width in bytes, architecture       u8, u8 (1 = x86-64, 2 = aarch64)
//! 18   reserved (zero)                            6 bytes
//! 24   section count, reserved                    u32, u32
//! 32   file length                                u64
//! 40   BLAKE3 of the file with these 32 bytes zero
//! 72   section table: per section kind, reserved (u32, u32), offset, length (u64, u64)
//! ...  sections; WEIGHTS starts on a 4096-byte boundary (so it can be used in place from a
//!      memory map), every other section on a 64-byte boundary; a signed artifact ends with a
//!      SIGNATURE section (the signer's Ed25519 public key and its signature of the digest),
//!      which the digest reads as zeros
//! ```
//!
//! A loader checks the magic, version, byte order, architecture, length and digest before it
//! reads any table, then the signature (when there is one, or when [`LoadOptions`] requires
//! one), then every table with checked arithmetic, then [`Plan::validate`]. An artifact is
//! native code: load only files you trust. The digest catches corruption; a signature by a key
//! the loader trusts catches files its build did not make.

use std::path::Path;

use std::ops::Range;
use std::sync::Arc;

use crate::buffer::{AlignedBuf, Weights};
use crate::plan::{IoSpec, Kernel, Need, Operand, Plan, Slot, Step};
use crate::signature::{PublicKey, SecretKey};
use crate::tensor::DType;

pub const MAGIC: [u8; 8] = *b"INCEPT\0\x1a";
/// Format 2 records each kernel's tile and operand counts and each operand's extent and
/// direction, which the loader checks the tables against (format 1 had neither).
pub const FORMAT_MAJOR: u16 = 2;
pub const FORMAT_MINOR: u16 = 0;

const BYTE_ORDER: u32 = 0x0102_0304;
const HEADER: usize = 72;
const SECTION_ENTRY: usize = 24;
const DIGEST_AT: usize = 40;
const WEIGHTS_ALIGN: usize = 4096;
const SECTION_ALIGN: usize = 64;

/// Section kinds.
mod kind {
    pub const META: u32 = 1;
    pub const CODE: u32 = 2;
    pub const KERNELS: u32 = 3;
    pub const STEPS: u32 = 4;
    pub const IO: u32 = 5;
    pub const WEIGHTS: u32 = 6;
    pub const SIGNATURE: u32 = 7;
    pub const ALL: [u32; 7] = [META, CODE, KERNELS, STEPS, IO, WEIGHTS, SIGNATURE];

    /// A known kind's slot among `ALL` (kinds are numbered from 1).
    pub fn index(kind: u32) -> usize {
        kind as usize - 1
    }
}

/// What a plan's artifact says about where it came from, besides the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// The compiler that wrote it ("incept 0.1.0").
    pub compiler: String,
    /// The code generator's settings that the machine code depends on, as `name=value` lines.
    pub codegen: String,
    /// Who signed it (filled in when an artifact is read; writing takes the key separately).
    pub signed_by: Option<PublicKey>,
}

/// What a loader demands of an artifact beyond its integrity.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// When not empty, only artifacts signed by one of these keys load.
    pub trusted_keys: Vec<PublicKey>,
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ArtifactError {
    #[error("cannot read '{path}': {reason}")]
    Io { path: String, reason: String },
    #[error("cannot write '{path}': {reason}")]
    Write { path: String, reason: String },
    #[error("not an incept artifact (no INCEPT magic at its start)")]
    NotIncept,
    #[error(
        "artifact format {major}.{minor} is newer than this runtime's {FORMAT_MAJOR}.{FORMAT_MINOR}: load it with a newer incept"
    )]
    NewerFormat { major: u16, minor: u16 },
    #[error(
        "artifact format {major}.{minor} is older than this runtime's {FORMAT_MAJOR}.{FORMAT_MINOR} (its tables lack what the loader checks): compile the model again"
    )]
    OlderFormat { major: u16, minor: u16 },
    #[error("the artifact was written for {file}, this machine is {host}")]
    Architecture { file: String, host: String },
    #[error("the artifact was written on a machine of the other byte order")]
    ByteOrder,
    #[error("the artifact is truncated: {got} of its {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    #[error("the artifact is corrupted: its BLAKE3 digest does not match its contents")]
    Corrupted,
    #[error("the artifact is malformed: {0}")]
    Malformed(String),
    #[error("the artifact is not signed, and this loader requires a signature by {0}")]
    Unsigned(String),
    #[error("the artifact is signed by {signer}, which this loader does not trust (it trusts {trusted})")]
    Untrusted { signer: String, trusted: String },
    #[error("the artifact's signature does not match its contents")]
    BadSignature,
}

fn arch_code(arch: &str) -> u8 {
    match arch {
        "x86_64" => 1,
        "aarch64" => 2,
        _ => 0,
    }
}

fn arch_name(code: u8) -> String {
    match code {
        1 => "x86_64".into(),
        2 => "aarch64".into(),
        c => format!("an unknown architecture ({c})"),
    }
}

fn dtype_code(d: DType) -> u8 {
    match d {
        DType::F32 => 1,
        DType::F64 => 2,
        DType::I32 => 3,
        DType::I64 => 4,
        DType::U8 => 5,
        DType::I8 => 6,
        DType::Bool => 7,
        DType::I16 => 8,
        DType::U16 => 9,
        DType::U32 => 10,
        DType::U64 => 11,
    }
}

fn dtype_of(code: u8) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| dtype_code(d) == code)
}

/// Little-endian encoding of one section.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }
    fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Checked decoding of one section: every read says what it was reading when it ran out.
struct In<'a> {
    bytes: &'a [u8],
    at: usize,
    section: &'static str,
}

impl<'a> In<'a> {
    fn err(&self, what: &str) -> ArtifactError {
        ArtifactError::Malformed(format!("{} section: {what} at byte {}", self.section, self.at))
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ArtifactError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| self.err(what))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, ArtifactError> {
        Ok(self.take(1, what)?[0])
    }
    fn u64(&mut self, what: &str) -> Result<u64, ArtifactError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn usize(&mut self, what: &str) -> Result<usize, ArtifactError> {
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| self.err(&format!("{what} of {v} (too large)")))
    }
    /// A count of items at least `min_bytes` each: refused before allocating if the section
    /// cannot hold that many.
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize, ArtifactError> {
        let n = self.usize(what)?;
        let left = self.bytes.len() - self.at;
        if n.checked_mul(min_bytes.max(1)).is_none_or(|b| b > left) {
            return Err(self.err(&format!("{what} of {n} (more than the section holds)")));
        }
        Ok(n)
    }
    fn str(&mut self, what: &str) -> Result<String, ArtifactError> {
        let n = self.count(1, what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(&format!("{what} (not UTF-8)")))
    }
    fn end(&self) -> Result<(), ArtifactError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.err(&format!("{} bytes after the last entry", self.bytes.len() - self.at)))
        }
    }
}

fn encode_io(o: &mut Out, list: &[IoSpec]) {
    o.usize(list.len());
    for io in list {
        o.str(&io.name);
        o.u8(dtype_code(io.dtype));
        o.usize(io.shape.len());
        for &d in &io.shape {
            o.usize(d);
        }
    }
}

fn decode_io(r: &mut In) -> Result<Vec<IoSpec>, ArtifactError> {
    let n = r.count(17, "input/output count")?;
    (0..n)
        .map(|_| {
            let name = r.str("name")?;
            let code = r.u8("dtype")?;
            let dtype = dtype_of(code).ok_or_else(|| r.err(&format!("dtype {code}")))?;
            let rank = r.count(8, "rank")?;
            let shape = (0..rank).map(|_| r.usize("dimension")).collect::<Result<Vec<_>, _>>()?;
            Ok(IoSpec { name, dtype, shape })
        })
        .collect()
}

/// The artifact of `plan`, for the architecture this runtime runs on, unsigned.
pub fn encode(plan: &Plan, info: &ArtifactInfo) -> Vec<u8> {
    encode_signed(plan, info, None)
}

/// The artifact of `plan`, signed with `key` when one is given.
pub fn encode_signed(plan: &Plan, info: &ArtifactInfo, key: Option<&SecretKey>) -> Vec<u8> {
    let mut meta = Out::default();
    meta.str(&info.compiler);
    meta.str(&info.codegen);
    meta.usize(plan.features.len());
    for f in &plan.features {
        meta.str(f);
    }
    meta.usize(plan.arena_size);
    meta.0.extend_from_slice(&plan.seal);
    match plan.status {
        Some(s) => {
            meta.u8(1);
            meta.usize(s);
        }
        None => meta.u8(0),
    }
    let mut kernels = Out::default();
    kernels.usize(plan.kernels.len());
    for k in &plan.kernels {
        kernels.usize(k.offset);
        kernels.usize(k.len);
        kernels.usize(k.tiles);
        kernels.usize(k.operands.len());
        for need in &k.operands {
            kernels.usize(need.extent);
            kernels.u8(need.writes as u8 | (need.constant as u8) << 1 | (need.entry as u8) << 2);
        }
        kernels.usize(k.calls.len());
        for &c in &k.calls {
            kernels.usize(c);
        }
        kernels.str(&k.name);
    }
    let mut steps = Out::default();
    steps.usize(plan.steps.len());
    for s in &plan.steps {
        steps.usize(s.kernel);
        steps.usize(s.tiles);
        steps.u64(s.flops);
        steps.str(&s.name);
        steps.str(&s.op);
        match &s.check {
            Some(c) => {
                steps.u8(1);
                steps.str(c);
            }
            None => steps.u8(0),
        }
        steps.usize(s.operands.len());
        for op in &s.operands {
            let (code, index) = op.slot.code();
            steps.u8(code);
            steps.usize(index);
            steps.usize(op.offset);
            steps.usize(op.extent);
            steps.u8(op.writes as u8);
        }
    }
    let mut io = Out::default();
    encode_io(&mut io, &plan.inputs);
    encode_io(&mut io, &plan.outputs);
    let unsigned = [0u8; crate::signature::SECTION_BYTES];
    let mut sections: Vec<(u32, &[u8])> = vec![
        (kind::META, &meta.0),
        (kind::CODE, &plan.code),
        (kind::KERNELS, &kernels.0),
        (kind::STEPS, &steps.0),
        (kind::IO, &io.0),
        (kind::WEIGHTS, plan.weights.as_slice()),
    ];
    if key.is_some() {
        sections.push((kind::SIGNATURE, &unsigned));
    }
    let mut file = vec![0u8; HEADER + SECTION_ENTRY * sections.len()];
    let mut table = Vec::new();
    for (k, bytes) in sections {
        let align = if k == kind::WEIGHTS { WEIGHTS_ALIGN } else { SECTION_ALIGN };
        file.resize(file.len().next_multiple_of(align), 0);
        table.push((k, file.len(), bytes.len()));
        file.extend_from_slice(bytes);
    }
    file[0..8].copy_from_slice(&MAGIC);
    file[8..10].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
    file[10..12].copy_from_slice(&FORMAT_MINOR.to_le_bytes());
    file[12..16].copy_from_slice(&BYTE_ORDER.to_le_bytes());
    file[16] = std::mem::size_of::<usize>() as u8;
    file[17] = arch_code(std::env::consts::ARCH);
    file[24..28].copy_from_slice(&(table.len() as u32).to_le_bytes());
    let len = file.len() as u64;
    file[32..40].copy_from_slice(&len.to_le_bytes());
    for (i, (k, offset, bytes)) in table.into_iter().enumerate() {
        let at = HEADER + SECTION_ENTRY * i;
        file[at..at + 4].copy_from_slice(&k.to_le_bytes());
        file[at + 8..at + 16].copy_from_slice(&(offset as u64).to_le_bytes());
        file[at + 16..at + 24].copy_from_slice(&(bytes as u64).to_le_bytes());
    }
    let hole = signature_range(&file).ok().flatten();
    let digest = digest(&file, hole.clone());
    file[DIGEST_AT..DIGEST_AT + 32].copy_from_slice(&digest);
    if let (Some(key), Some(range)) = (key, hole) {
        file[range].copy_from_slice(&key.sign(&digest));
    }
    file
}

/// Writes `plan`'s artifact to `path`; a failure leaves whatever was at `path` untouched.
pub fn save(plan: &Plan, info: &ArtifactInfo, path: &Path) -> Result<(), ArtifactError> {
    save_signed(plan, info, path, None)
}

/// [`save`], signed with `key` when one is given.
pub fn save_signed(
    plan: &Plan,
    info: &ArtifactInfo,
    path: &Path,
    key: Option<&SecretKey>,
) -> Result<(), ArtifactError> {
    crate::file::write_atomic(path, &encode_signed(plan, info, key))
        .map_err(|e| ArtifactError::Write { path: path.display().to_string(), reason: e.to_string() })
}

/// Maps an artifact read-only and checks it (see [`decode`]); the plan's weights are used in
/// place from the map. Changing the file while a model uses it is undefined behaviour, as for
/// any memory-mapped file.
pub fn load(path: &Path) -> Result<(Plan, ArtifactInfo), ArtifactError> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] under a loader's demands (a required signature).
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<(Plan, ArtifactInfo), ArtifactError> {
    let io = |e: std::io::Error| ArtifactError::Io { path: path.display().to_string(), reason: e.to_string() };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.is_dir() {
        return Err(ArtifactError::Io { path: path.display().to_string(), reason: "a directory, not a file".into() });
    }
    // SAFETY: the map is read-only and private to this process; the documented contract is
    // that the file does not change while it is mapped. Populating it up front faults its
    // pages in one pass instead of one by one during the digest.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
    let map = Arc::new(map);
    let signed_by = check_header(&map, options)?;
    let (plan, info) =
        decode_tables(&map, |range| Weights::Mapped { map: map.clone(), offset: range.start, len: range.len() })?;
    Ok((plan, ArtifactInfo { signed_by, ..info }))
}

/// BLAKE3 of a file with its digest field, and its signature section (`hole`) if any, read as
/// zeros (SIMD and the rayon pool: ResNet50's 124 MB hash in a fraction of the SHA-256 time, 105
/// ms here).
fn digest(file: &[u8], hole: Option<Range<usize>>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&file[..DIGEST_AT]);
    h.update(&[0u8; 32]);
    match hole {
        Some(r) => {
            h.update_rayon(&file[DIGEST_AT + 32..r.start]);
            h.update(&vec![0u8; r.len()]);
            h.update(&file[r.end..]);
        }
        None => {
            h.update_rayon(&file[DIGEST_AT + 32..]);
        }
    }
    *h.finalize().as_bytes()
}

/// Where the section table ends (it must fit the file).
fn table_end(bytes: &[u8]) -> Result<usize, ArtifactError> {
    let count = le_u32(bytes, 24) as usize;
    count
        .checked_mul(SECTION_ENTRY)
        .and_then(|t| t.checked_add(HEADER))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| ArtifactError::Malformed(format!("a table of {count} sections does not fit the file")))
}

/// The bytes the section table entry at `at` names, if they lie inside the file after the table.
fn entry_range(bytes: &[u8], at: usize, table_end: usize) -> Option<Range<usize>> {
    let (offset, len) = (le_u64(bytes, at + 8), le_u64(bytes, at + 16));
    let (o, l) = (usize::try_from(offset).ok()?, usize::try_from(len).ok()?);
    Some(o..o.checked_add(l)?).filter(|r| r.start >= table_end && r.end <= bytes.len())
}

/// A section table entry's place, for errors.
fn entry_text(bytes: &[u8], at: usize) -> String {
    format!("at {} (+{})", le_u64(bytes, at + 8), le_u64(bytes, at + 16))
}

/// Where the signature section lies, if the section table names one: checked to lie inside the
/// file, after the table and the digest, and to be exactly a signature long.
fn signature_range(bytes: &[u8]) -> Result<Option<Range<usize>>, ArtifactError> {
    let malformed = |what: String| ArtifactError::Malformed(what);
    let table_end = table_end(bytes)?;
    let mut found = None;
    for at in (HEADER..table_end).step_by(SECTION_ENTRY) {
        if le_u32(bytes, at) != kind::SIGNATURE {
            continue;
        }
        let range = entry_range(bytes, at, table_end)
            .filter(|r| r.len() == crate::signature::SECTION_BYTES)
            .ok_or_else(|| {
                let want = crate::signature::SECTION_BYTES;
                malformed(format!("a signature section {}, not {want} bytes inside the file", entry_text(bytes, at)))
            })?;
        if found.replace(range).is_some() {
            return Err(malformed("two signature sections".into()));
        }
    }
    Ok(found)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The plan in an artifact, after checking its header, digest, tables and the plan itself (its
/// weights copied out of `bytes`).
pub fn decode(bytes: &[u8]) -> Result<(Plan, ArtifactInfo), ArtifactError> {
    decode_with(bytes, &LoadOptions::default())
}

/// [`decode`] under a loader's demands (a required signature).
pub fn decode_with(bytes: &[u8], options: &LoadOptions) -> Result<(Plan, ArtifactInfo), ArtifactError> {
    let signed_by = check_header(bytes, options)?;
    let (plan, info) = decode_verified(bytes)?;
    Ok((plan, ArtifactInfo { signed_by, ..info }))
}

/// The header's magic, version, byte order, architecture and length, the digest, and the
/// signature: who signed the artifact, if anyone did (a signature that does not match is
/// refused whether or not one is required).
fn check_header(bytes: &[u8], options: &LoadOptions) -> Result<Option<PublicKey>, ArtifactError> {
    if bytes.len() < 8 || bytes[0..8] != MAGIC {
        return Err(ArtifactError::NotIncept);
    }
    if bytes.len() < HEADER {
        return Err(ArtifactError::Truncated { expected: HEADER as u64, got: bytes.len() as u64 });
    }
    let (major, minor) = (le_u16(bytes, 8), le_u16(bytes, 10));
    if major > FORMAT_MAJOR || major == FORMAT_MAJOR && minor > FORMAT_MINOR {
        return Err(ArtifactError::NewerFormat { major, minor });
    }
    if major < FORMAT_MAJOR {
        return Err(ArtifactError::OlderFormat { major, minor });
    }
    if le_u32(bytes, 12) != BYTE_ORDER {
        return Err(ArtifactError::ByteOrder);
    }
    let host = arch_code(std::env::consts::ARCH);
    if bytes[17] != host || bytes[16] as usize != std::mem::size_of::<usize>() {
        return Err(ArtifactError::Architecture {
            file: format!("{} ({}-bit)", arch_name(bytes[17]), 8 * bytes[16] as u32),
            host: format!("{} ({}-bit)", std::env::consts::ARCH, 8 * std::mem::size_of::<usize>()),
        });
    }
    let expected = le_u64(bytes, 32);
    if expected != bytes.len() as u64 {
        return Err(ArtifactError::Truncated { expected, got: bytes.len() as u64 });
    }
    let hole = signature_range(bytes)?;
    let digest = digest(bytes, hole.clone());
    if digest != bytes[DIGEST_AT..DIGEST_AT + 32] {
        return Err(ArtifactError::Corrupted);
    }
    let signer = match hole {
        Some(r) => Some(crate::signature::verify(&bytes[r], &digest).ok_or(ArtifactError::BadSignature)?),
        None => None,
    };
    let keys = |list: &[PublicKey]| list.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(" or ");
    match signer {
        _ if options.trusted_keys.is_empty() => {}
        None => return Err(ArtifactError::Unsigned(keys(&options.trusted_keys))),
        Some(s) if !options.trusted_keys.contains(&s) => {
            return Err(ArtifactError::Untrusted { signer: s.to_string(), trusted: keys(&options.trusted_keys) });
        }
        Some(_) => {}
    }
    Ok(signer)
}

/// [`decode`] past the digest: the tables of an artifact whose header and digest were checked
/// (or, in tests and fuzzing, of any bytes: this must refuse, never panic).
#[doc(hidden)]
pub fn decode_verified(bytes: &[u8]) -> Result<(Plan, ArtifactInfo), ArtifactError> {
    decode_tables(bytes, |range| Weights::Owned(AlignedBuf::from_bytes(&bytes[range])))
}

/// The tables of an artifact; `weights` makes the plan's weights from their byte range.
fn decode_tables(
    bytes: &[u8],
    weights: impl FnOnce(Range<usize>) -> Weights,
) -> Result<(Plan, ArtifactInfo), ArtifactError> {
    let malformed = |what: String| ArtifactError::Malformed(what);
    if bytes.len() < HEADER {
        return Err(ArtifactError::Truncated { expected: HEADER as u64, got: bytes.len() as u64 });
    }
    let table_end = table_end(bytes)?;
    let mut found: [Option<Range<usize>>; kind::ALL.len()] = std::array::from_fn(|_| None);
    for at in (HEADER..table_end).step_by(SECTION_ENTRY) {
        let k = le_u32(bytes, at);
        let range = entry_range(bytes, at, table_end)
            .ok_or_else(|| malformed(format!("section {k} {} lies outside the file", entry_text(bytes, at))))?;
        // Unknown kinds are skipped: a later minor version may add sections.
        if kind::ALL.contains(&k) {
            let i = kind::index(k);
            if found[i].is_some() {
                return Err(malformed(format!("section {k} appears twice")));
            }
            if k == kind::WEIGHTS && !range.start.is_multiple_of(WEIGHTS_ALIGN) {
                return Err(malformed(format!("the weights start at {}, not on a page", range.start)));
            }
            found[i] = Some(range);
        }
    }
    let section = |k: u32, name: &'static str| {
        found[kind::index(k)]
            .clone()
            .map(|r| In { bytes: &bytes[r], at: 0, section: name })
            .ok_or_else(|| malformed(format!("no {name} section")))
    };

    let mut m = section(kind::META, "meta")?;
    let compiler = m.str("compiler")?;
    let codegen = m.str("codegen settings")?;
    let n = m.count(8, "feature count")?;
    let features = (0..n).map(|_| m.str("feature")).collect::<Result<Vec<_>, _>>()?;
    let arena_size = m.usize("arena size")?;
    let seal: [u8; 32] = m.take(32, "seal")?.try_into().expect("32 bytes");
    let status = match m.u8("status flag")? {
        0 => None,
        1 => Some(m.usize("status offset")?),
        f => return Err(m.err(&format!("status flag {f}"))),
    };
    m.end()?;

    let code = section(kind::CODE, "code")?.bytes.to_vec();

    let mut k = section(kind::KERNELS, "kernels")?;
    let n = k.count(48, "kernel count")?;
    let kernels = (0..n)
        .map(|_| {
            let (offset, len) = (k.usize("kernel offset")?, k.usize("kernel length")?);
            let tiles = k.usize("kernel tiles")?;
            let n_ops = k.count(9, "kernel operand count")?;
            let operands = (0..n_ops)
                .map(|_| {
                    let extent = k.usize("operand extent")?;
                    let flags = k.u8("operand flags")?;
                    if flags > 7 {
                        return Err(k.err(&format!("operand flags {flags}")));
                    }
                    Ok(Need { extent, writes: flags & 1 != 0, constant: flags & 2 != 0, entry: flags & 4 != 0 })
                })
                .collect::<Result<Vec<_>, ArtifactError>>()?;
            let n_calls = k.count(8, "microkernel count")?;
            let calls = (0..n_calls).map(|_| k.usize("microkernel")).collect::<Result<Vec<_>, _>>()?;
            Ok(Kernel { offset, len, tiles, operands, calls, name: k.str("kernel name")? })
        })
        .collect::<Result<Vec<_>, ArtifactError>>()?;
    k.end()?;

    let mut s = section(kind::STEPS, "steps")?;
    let n = s.count(49, "step count")?;
    let steps = (0..n)
        .map(|_| {
            let kernel = s.usize("step kernel")?;
            let tiles = s.usize("step tiles")?;
            let flops = s.u64("step flops")?;
            let name = s.str("step name")?;
            let op = s.str("step op")?;
            let check = match s.u8("check flag")? {
                0 => None,
                1 => Some(s.str("check message")?),
                f => return Err(s.err(&format!("check flag {f}"))),
            };
            let n_ops = s.count(26, "operand count")?;
            let operands = (0..n_ops)
                .map(|_| {
                    let code = s.u8("operand slot")?;
                    let index = s.usize("operand slot index")?;
                    let offset = s.usize("operand offset")?;
                    let extent = s.usize("operand extent")?;
                    let writes = match s.u8("operand direction")? {
                        0 => false,
                        1 => true,
                        d => return Err(s.err(&format!("operand direction {d}"))),
                    };
                    let slot = Slot::from_code(code, index).ok_or_else(|| s.err(&format!("operand slot {code}")))?;
                    Ok(Operand { slot, offset, extent, writes })
                })
                .collect::<Result<Vec<_>, ArtifactError>>()?;
            Ok(Step { kernel, operands, tiles, name, op, flops, check })
        })
        .collect::<Result<Vec<_>, ArtifactError>>()?;
    s.end()?;

    let mut io = section(kind::IO, "inputs/outputs")?;
    let inputs = decode_io(&mut io)?;
    let outputs = decode_io(&mut io)?;
    io.end()?;

    let weights =
        weights(found[kind::index(kind::WEIGHTS)].clone().ok_or_else(|| malformed("no weights section".into()))?);
    let plan = Plan { code, kernels, steps, weights, arena_size, status, inputs, outputs, features, seal };
    plan.validate().map_err(|e| malformed(format!("the plan: {e}")))?;
    Ok((plan, ArtifactInfo { compiler, codegen, signed_by: None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Plan {
        let weights = AlignedBuf::from_bytes(&(0..300u32).flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        let buf = |slot, offset, extent, writes| Operand { slot, offset, extent, writes };
        let mut plan = Plan {
            code: (0..148u8).collect(),
            kernels: vec![
                Kernel { offset: 0, len: 60, name: "micro".into(), tiles: 0, operands: vec![], calls: vec![] },
                Kernel {
                    offset: 64,
                    len: 36,
                    name: "conv".into(),
                    tiles: 7,
                    operands: [
                        (768, false, false, false),
                        (1136, false, true, false),
                        (256, true, false, false),
                        (0, false, false, true),
                        (0, false, false, true),
                    ]
                    .map(|(extent, writes, constant, entry)| Need { extent, writes, constant, entry })
                    .to_vec(),
                    calls: vec![0],
                },
                Kernel {
                    offset: 128,
                    len: 20,
                    name: "copy".into(),
                    tiles: 1,
                    operands: vec![Need { extent: 40, writes: true, constant: false, entry: false }],
                    calls: vec![],
                },
            ],
            steps: vec![
                Step {
                    kernel: 1,
                    operands: vec![
                        buf(Slot::Input(0), 0, 768, false),
                        buf(Slot::Weights, 64, 1136, false),
                        buf(Slot::Arena, 128, 256, true),
                        Operand::entry(Slot::Kernel(0)),
                        Operand::entry(Slot::Helpers),
                    ],
                    tiles: 7,
                    name: "conv".into(),
                    op: "Conv".into(),
                    flops: 1234,
                    check: Some("indices out of range".into()),
                },
                Step {
                    kernel: 2,
                    operands: vec![buf(Slot::Output(0), 0, 40, true)],
                    tiles: 1,
                    name: "copy".into(),
                    op: "Copy".into(),
                    flops: 0,
                    check: None,
                },
            ],
            weights: weights.into(),
            arena_size: 512,
            status: Some(8),
            inputs: vec![IoSpec { name: "x".into(), dtype: DType::F32, shape: vec![1, 3, 8, 8] }],
            outputs: vec![IoSpec { name: "y".into(), dtype: DType::I64, shape: vec![1, 5] }],
            features: vec!["avx2".into(), "fma".into()],
            seal: [0; 32],
        };
        plan.seal();
        plan
    }

    fn info() -> ArtifactInfo {
        ArtifactInfo { compiler: "incept test".into(), codegen: "opt_level=speed".into(), signed_by: None }
    }

    fn same(a: &Plan, b: &Plan) {
        assert_eq!(a.code, b.code);
        assert_eq!(format!("{:?}", a.kernels), format!("{:?}", b.kernels));
        assert_eq!(format!("{:?}", a.steps), format!("{:?}", b.steps));
        assert_eq!(a.weights.as_slice(), b.weights.as_slice());
        assert_eq!((a.arena_size, a.status), (b.arena_size, b.status));
        assert_eq!((&a.inputs, &a.outputs, &a.features), (&b.inputs, &b.outputs, &b.features));
    }

    #[test]
    fn round_trip() {
        let plan = sample();
        let bytes = encode(&plan, &info());
        let weights_at = le_u64(&bytes, HEADER + SECTION_ENTRY * 5 + 8);
        assert_eq!(weights_at % WEIGHTS_ALIGN as u64, 0, "weights on a page");
        let (back, meta) = decode(&bytes).expect("decode");
        same(&plan, &back);
        assert_eq!(meta, info());
    }

    /// Every byte flipped and every truncation of a small artifact is a clean refusal: the
    /// digest (or the header check before it) catches each.
    #[test]
    fn corruption_is_refused() {
        let bytes = encode(&sample(), &info());
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x40;
            assert!(decode(&b).is_err(), "flipped byte {at} accepted");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} accepted");
        }
        let mut b = bytes.clone();
        b[8] = 3;
        assert!(matches!(decode(&b), Err(ArtifactError::NewerFormat { major: 3, .. })));
        let mut b = bytes.clone();
        b[8] = 1;
        assert!(matches!(decode(&b), Err(ArtifactError::OlderFormat { major: 1, .. })));
        let mut b = bytes.clone();
        b[17] = 9;
        assert!(matches!(decode(&b), Err(ArtifactError::Architecture { .. })));
        assert_eq!(decode(b"not an artifact at all").err(), Some(ArtifactError::NotIncept));
        let mut b = bytes.clone();
        b[200] ^= 1;
        assert_eq!(decode(&b).err(), Some(ArtifactError::Corrupted));
    }

    /// Past the digest, the table reader refuses (never panics on) any change: every byte of
    /// the sections set to a few values, each decoded without the digest check.
    #[test]
    fn malformed_tables_are_refused_without_panics() {
        let bytes = encode(&sample(), &info());
        let weights_at = le_u64(&bytes, HEADER + SECTION_ENTRY * 5 + 8) as usize;
        let mut accepted = 0;
        for at in 24..weights_at {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = bytes.clone();
                if b[at] == v {
                    continue;
                }
                b[at] = v;
                if let Ok((plan, _)) = decode_verified(&b) {
                    // Whatever decodes must still be a plan whose references stay in bounds.
                    plan.validate().expect("a decoded plan validates");
                    accepted += 1;
                }
            }
        }
        // Names, flops, tile counts and padding bytes may change harmlessly; most changes not.
        assert!(accepted > 0, "no harmless change decoded: the test would not see a mis-decode");
    }

    /// A signed artifact loads under a loader that trusts its key and under one that asks for
    /// nothing, and is refused (with what was wrong) by one that trusts another key; an unsigned
    /// one is refused where a signature is required; a signature section that does not match,
    /// or any byte of the file changed, is refused even where none is required.
    #[test]
    fn signatures_are_checked() {
        let (key, other) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let trust = |k: &SecretKey| LoadOptions { trusted_keys: vec![k.public()] };
        let signed = encode_signed(&sample(), &info(), Some(&key));
        let (plan, meta) = decode_with(&signed, &trust(&key)).expect("trusted");
        same(&sample(), &plan);
        assert_eq!(meta.signed_by, Some(key.public()));
        assert_eq!(decode(&signed).expect("no demand").1.signed_by, Some(key.public()));
        assert!(matches!(decode_with(&signed, &trust(&other)), Err(ArtifactError::Untrusted { .. })));
        let unsigned = encode(&sample(), &info());
        assert_eq!(decode(&unsigned).expect("unsigned").1.signed_by, None);
        assert!(matches!(decode_with(&unsigned, &trust(&key)), Err(ArtifactError::Unsigned(_))));
        // The signature covers the digest, which covers every other byte.
        let sig_at = signature_range(&signed).unwrap().expect("a signature section");
        let mut forged = signed.clone();
        forged[sig_at.start + 40] ^= 1;
        assert_eq!(decode(&forged).err(), Some(ArtifactError::BadSignature));
        // Another key's signature over the same digest is a valid signature by that key.
        let mut resigned = signed.clone();
        let digest: [u8; 32] = signed[DIGEST_AT..DIGEST_AT + 32].try_into().unwrap();
        resigned[sig_at.clone()].copy_from_slice(&other.sign(&digest));
        assert!(matches!(decode_with(&resigned, &trust(&key)), Err(ArtifactError::Untrusted { .. })));
        for at in (0..signed.len()).step_by(97) {
            let mut b = signed.clone();
            b[at] ^= 0x10;
            assert!(decode_with(&b, &trust(&key)).is_err(), "flipped byte {at} accepted");
        }
    }
}
