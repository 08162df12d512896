//! The C API of incept-runtime (`include/incept.h`): load a compiled `.incept` model, ask for its
//! inputs and outputs, and run it on caller-owned buffers.
//!
//! Conventions: every function that can fail returns an [`InceptStatus`] and leaves a message for
//! [`incept_last_error`] on the calling thread; no function panics across the C boundary (each
//! entry point catches unwinding and reports `INCEPT_STATUS_PANIC`); null pointers where a value
//! is required are `INCEPT_STATUS_INVALID_ARGUMENT`, never a crash.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use incept_runtime::artifact::ArtifactError;
use incept_runtime::{DType, Model, RunError, RunOptions, TensorMut, TensorRef};

/// What a call returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InceptStatus {
    Ok = 0,
    /// A null pointer, an index out of range, or a name that does not exist.
    InvalidArgument = 1,
    /// The file could not be read.
    Io = 2,
    /// The file is not a valid artifact for this runtime (not incept, newer format, other
    /// architecture, truncated, corrupted, malformed).
    Artifact = 3,
    /// This CPU lacks features the model's code needs (the message names them).
    CpuFeatures = 4,
    /// Input or output buffers do not match the model (count, byte size).
    Input = 5,
    /// The model ran and refused its data (e.g. an index out of range in a Gather).
    Run = 6,
    /// A bug in incept: a Rust panic was caught at the boundary.
    Panic = 7,
    /// The artifact is not signed by a trusted key (`incept_model_load_trusted`), or its
    /// signature does not match its contents.
    Signature = 8,
}

/// Element types, numbered as ONNX's TensorProto.DataType.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InceptDType {
    F32 = 1,
    U8 = 2,
    I8 = 3,
    U16 = 4,
    I16 = 5,
    I32 = 6,
    I64 = 7,
    Bool = 9,
    F64 = 11,
    U32 = 12,
    U64 = 13,
}

impl From<DType> for InceptDType {
    fn from(d: DType) -> InceptDType {
        match d {
            DType::F32 => InceptDType::F32,
            DType::U8 => InceptDType::U8,
            DType::I8 => InceptDType::I8,
            DType::U16 => InceptDType::U16,
            DType::I16 => InceptDType::I16,
            DType::I32 => InceptDType::I32,
            DType::I64 => InceptDType::I64,
            DType::Bool => InceptDType::Bool,
            DType::F64 => InceptDType::F64,
            DType::U32 => InceptDType::U32,
            DType::U64 => InceptDType::U64,
        }
    }
}

/// One input or output of a model. The pointers stay valid until the model is freed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InceptTensorInfo {
    /// NUL-terminated name.
    pub name: *const c_char,
    pub dtype: InceptDType,
    pub rank: usize,
    /// `rank` dimensions, row-major (C order).
    pub shape: *const usize,
    /// The exact size of the buffer `incept_model_run` expects for it.
    pub byte_size: usize,
}

struct Io {
    name: CString,
    dtype: DType,
    shape: Vec<usize>,
    bytes: usize,
}

/// A loaded model (opaque).
pub struct InceptModel {
    model: Model,
    inputs: Vec<Io>,
    outputs: Vec<Io>,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    // A message with an interior NUL keeps the part before it.
    let text = msg.split('\0').next().unwrap_or_default();
    let c = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

type Fail = (InceptStatus, String);

/// Runs an entry point's body: its error becomes the thread's last error, a panic becomes
/// `INCEPT_STATUS_PANIC`.
fn guard(body: impl FnOnce() -> Result<(), Fail>) -> InceptStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => InceptStatus::Ok,
        Ok(Err((status, msg))) => {
            set_error(&msg);
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(&format!("internal error (a bug in incept, please report it): {what}"));
            InceptStatus::Panic
        }
    }
}

fn invalid(msg: impl Into<String>) -> Fail {
    (InceptStatus::InvalidArgument, msg.into())
}

fn run_error(e: RunError) -> Fail {
    let status = match &e {
        RunError::Artifact(ArtifactError::Io { .. } | ArtifactError::Write { .. }) => InceptStatus::Io,
        RunError::Artifact(
            ArtifactError::Unsigned(_) | ArtifactError::Untrusted { .. } | ArtifactError::BadSignature,
        ) => InceptStatus::Signature,
        RunError::Artifact(_) | RunError::Plan(_) | RunError::Code(_) => InceptStatus::Artifact,
        RunError::CpuFeatures { .. } => InceptStatus::CpuFeatures,
        RunError::Check { .. } => InceptStatus::Run,
        RunError::Threads { .. } => InceptStatus::InvalidArgument,
        _ => InceptStatus::Input,
    };
    (status, e.to_string())
}

/// The addresses of the models `incept_model_load` returned and `incept_model_free` has not
/// freed yet. Every call checks its handle here before touching it, so a freed, foreign or
/// garbage pointer is an `INCEPT_STATUS_INVALID_ARGUMENT`, not a crash (a handle freed while
/// another thread is inside a call on it is still undefined behaviour).
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// # Safety
/// `model` is null or any pointer: only one in [`LIVE`] is dereferenced.
unsafe fn model_ref<'a>(model: *const InceptModel) -> Result<&'a InceptModel, Fail> {
    if model.is_null() {
        return Err(invalid("model is null"));
    }
    if !live().contains(&(model as usize)) {
        return Err(invalid("model is not a live handle (freed already, or not from incept_model_load)"));
    }
    // SAFETY: a live handle is a Box<InceptModel> from incept_model_load, not yet freed.
    Ok(unsafe { &*model })
}

/// The version of this library, e.g. "0.1.0" (a static string).
#[unsafe(no_mangle)]
pub extern "C" fn incept_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on this thread ("" if none). The pointer stays valid until
/// the next failing call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn incept_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Loads a compiled model (`incept compile model.onnx -o model.incept`): checks the file's header,
/// digest, tables and this CPU's features, and starts `threads` worker threads (0: one per
/// physical core; 1: run on the calling thread; more than four per logical CPU is refused with
/// `INCEPT_STATUS_INVALID_ARGUMENT`). On success `*out` holds a model to free with
/// `incept_model_free`; on failure it is set to NULL.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to writable storage for a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_load(
    path: *const c_char,
    threads: usize,
    out: *mut *mut InceptModel,
) -> InceptStatus {
    // SAFETY: forwarded contract; no key is read.
    unsafe { load(path, threads, None, out) }
}

/// Like `incept_model_load`, but loads only an artifact signed by the key `public_key` (its 32
/// bytes: the 64 hex digits of the `.pub` file `incept keygen` wrote); an unsigned artifact, one
/// signed by another key or one whose signature does not match is `INCEPT_STATUS_SIGNATURE`.
///
/// # Safety
/// As `incept_model_load`; `public_key` is null (an error) or points to 32 readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_load_trusted(
    path: *const c_char,
    threads: usize,
    public_key: *const u8,
    out: *mut *mut InceptModel,
) -> InceptStatus {
    // SAFETY: forwarded contract.
    unsafe { load(path, threads, Some(public_key), out) }
}

/// # Safety
/// `path` is a NUL-terminated string; `out` points to writable storage for a pointer;
/// `public_key`, when given, is null or points to 32 readable bytes.
unsafe fn load(
    path: *const c_char,
    threads: usize,
    public_key: Option<*const u8>,
    out: *mut *mut InceptModel,
) -> InceptStatus {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is null"));
        }
        // SAFETY: `out` is non-null and writable (the caller's contract).
        unsafe { *out = std::ptr::null_mut() };
        if path.is_null() {
            return Err(invalid("path is null"));
        }
        // SAFETY: `path` is a NUL-terminated string (the caller's contract).
        let path = unsafe { CStr::from_ptr(path) };
        let path = path.to_str().map_err(|_| invalid("path is not UTF-8"))?;
        let mut load = incept_runtime::artifact::LoadOptions::default();
        if let Some(key) = public_key {
            if key.is_null() {
                return Err(invalid("public_key is null"));
            }
            // SAFETY: a non-null key points to 32 readable bytes (the caller's contract).
            let bytes: [u8; 32] = unsafe { std::slice::from_raw_parts(key, 32) }.try_into().expect("32 bytes");
            load.trusted_keys.push(incept_runtime::signature::PublicKey(bytes));
        }
        let model = Model::load_with(path, &RunOptions { threads }, &load).map_err(run_error)?;
        let io = |specs: &[incept_runtime::IoSpec]| -> Result<Vec<Io>, Fail> {
            specs
                .iter()
                .map(|s| {
                    let name = CString::new(s.name.as_str())
                        .map_err(|_| (InceptStatus::Artifact, format!("name {:?} holds a NUL byte", s.name)))?;
                    Ok(Io { name, dtype: s.dtype, shape: s.shape.clone(), bytes: s.byte_size() })
                })
                .collect()
        };
        let inputs = io(&model.plan().inputs)?;
        let outputs = io(&model.plan().outputs)?;
        let handle = Box::new(InceptModel { model, inputs, outputs });
        let handle = Box::into_raw(handle);
        live().insert(handle as usize);
        // SAFETY: as above.
        unsafe { *out = handle };
        Ok(())
    })
}

/// Frees a model (NULL is ignored: `INCEPT_STATUS_OK`). No other call on it may be running. A
/// pointer that is not a live model (freed already, or never loaded) is left alone and reported
/// as `INCEPT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `model` is null or any pointer; only a live model is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_free(model: *mut InceptModel) -> InceptStatus {
    guard(|| {
        if model.is_null() {
            return Ok(());
        }
        if !live().remove(&(model as usize)) {
            return Err(invalid("model is not a live handle (freed twice, or not from incept_model_load)"));
        }
        // SAFETY: the pointer came from Box::into_raw in incept_model_load and was live until now.
        drop(unsafe { Box::from_raw(model) });
        Ok(())
    })
}

/// The number of inputs (0 for NULL or a pointer that is not a live model).
///
/// # Safety
/// `model` is null or any pointer; only a live model is read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_input_count(model: *const InceptModel) -> usize {
    // SAFETY: model_ref dereferences live handles only.
    unsafe { model_ref(model) }.map_or(0, |m| m.inputs.len())
}

/// The number of outputs (0 for NULL or a pointer that is not a live model).
///
/// # Safety
/// `model` is null or any pointer; only a live model is read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_output_count(model: *const InceptModel) -> usize {
    // SAFETY: model_ref dereferences live handles only.
    unsafe { model_ref(model) }.map_or(0, |m| m.outputs.len())
}

fn info(io: &Io) -> InceptTensorInfo {
    InceptTensorInfo {
        name: io.name.as_ptr(),
        dtype: io.dtype.into(),
        rank: io.shape.len(),
        shape: io.shape.as_ptr(),
        byte_size: io.bytes,
    }
}

/// # Safety
/// `model` is null or live; `out` is null or writable.
unsafe fn io_info(model: *const InceptModel, index: usize, out: *mut InceptTensorInfo, outputs: bool) -> InceptStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_ref(model) }?;
        let (list, what) = if outputs { (&m.outputs, "output") } else { (&m.inputs, "input") };
        let io = list.get(index).ok_or_else(|| invalid(format!("{what} {index} of {}", list.len())))?;
        if out.is_null() {
            return Err(invalid("out is null"));
        }
        // SAFETY: `out` is non-null and writable (the caller's contract).
        unsafe { *out = info(io) };
        Ok(())
    })
}

/// Describes input `index` (name, dtype, shape, byte size).
///
/// # Safety
/// `model` is a live model; `out` points to writable storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_input_info(
    model: *const InceptModel,
    index: usize,
    out: *mut InceptTensorInfo,
) -> InceptStatus {
    // SAFETY: forwarded contract.
    unsafe { io_info(model, index, out, false) }
}

/// Describes output `index` (name, dtype, shape, byte size).
///
/// # Safety
/// `model` is a live model; `out` points to writable storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_output_info(
    model: *const InceptModel,
    index: usize,
    out: *mut InceptTensorInfo,
) -> InceptStatus {
    // SAFETY: forwarded contract.
    unsafe { io_info(model, index, out, true) }
}

/// # Safety
/// as for the public lookups.
unsafe fn find(model: *const InceptModel, name: *const c_char, index: *mut usize, outputs: bool) -> InceptStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_ref(model) }?;
        if name.is_null() || index.is_null() {
            return Err(invalid("name or index is null"));
        }
        // SAFETY: `name` is NUL-terminated (the caller's contract).
        let name = unsafe { CStr::from_ptr(name) };
        let (list, what) = if outputs { (&m.outputs, "output") } else { (&m.inputs, "input") };
        let k = list.iter().position(|io| io.name.as_c_str() == name).ok_or_else(|| {
            let names: Vec<String> = list.iter().map(|io| io.name.to_string_lossy().into_owned()).collect();
            invalid(format!("no {what} named '{}' ({what}s: {})", name.to_string_lossy(), names.join(", ")))
        })?;
        // SAFETY: `index` is non-null and writable.
        unsafe { *index = k };
        Ok(())
    })
}

/// The index of the input called `name`.
///
/// # Safety
/// `model` is live; `name` is NUL-terminated; `index` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_find_input(
    model: *const InceptModel,
    name: *const c_char,
    index: *mut usize,
) -> InceptStatus {
    // SAFETY: forwarded contract.
    unsafe { find(model, name, index, false) }
}

/// The index of the output called `name`.
///
/// # Safety
/// `model` is live; `name` is NUL-terminated; `index` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_find_output(
    model: *const InceptModel,
    name: *const c_char,
    index: *mut usize,
) -> InceptStatus {
    // SAFETY: forwarded contract.
    unsafe { find(model, name, index, true) }
}

/// Runs the model. `inputs[i]` points to `input_bytes[i]` bytes holding input i (in the model's
/// order, row-major, little-endian, of its dtype and shape); `outputs[j]` to `output_bytes[j]`
/// writable bytes for output j. Sizes must equal each tensor's `byte_size`. Buffers are the
/// caller's, read and written in place (any alignment; 64-byte aligned is fastest); a call
/// allocates only two small lists (its views of those buffers), never a tensor. Safe to call
/// from several threads at once on the same model.
///
/// # Safety
/// `model` is live; the arrays hold `n_inputs` / `n_outputs` entries; each buffer is valid for
/// its stated size; output buffers do not overlap each other or the inputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn incept_model_run(
    model: *const InceptModel,
    inputs: *const *const c_void,
    input_bytes: *const usize,
    n_inputs: usize,
    outputs: *const *mut c_void,
    output_bytes: *const usize,
    n_outputs: usize,
) -> InceptStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_ref(model) }?;
        if n_inputs != m.inputs.len() || n_outputs != m.outputs.len() {
            let names = |l: &[Io]| l.iter().map(|io| io.name.to_string_lossy().into_owned()).collect::<Vec<_>>();
            return Err((
                InceptStatus::Input,
                format!(
                    "the model takes {} input(s) ({}) and {} output buffer(s) ({}); {n_inputs} and {n_outputs} given",
                    m.inputs.len(),
                    names(&m.inputs).join(", "),
                    m.outputs.len(),
                    names(&m.outputs).join(", ")
                ),
            ));
        }
        let missing = |null: bool, n: usize| n > 0 && null;
        if missing(inputs.is_null() || input_bytes.is_null(), n_inputs)
            || missing(outputs.is_null() || output_bytes.is_null(), n_outputs)
        {
            return Err(invalid("a buffer or size array is null"));
        }
        let slice = |k: usize, what: &str, io: &Io, ptr: *const c_void, len: usize| -> Result<(), Fail> {
            if ptr.is_null() {
                return Err(invalid(format!("{what} {k} ('{}') is null", io.name.to_string_lossy())));
            }
            if len != io.bytes {
                return Err((
                    InceptStatus::Input,
                    format!(
                        "{what} {k} ('{}'): the buffer holds {len} bytes, the tensor {} ({} {:?})",
                        io.name.to_string_lossy(),
                        io.bytes,
                        io.dtype,
                        io.shape
                    ),
                ));
            }
            Ok(())
        };
        let mut ins = Vec::with_capacity(n_inputs);
        for (k, io) in m.inputs.iter().enumerate() {
            // SAFETY: the arrays hold n_inputs entries (checked non-null above when n > 0).
            let (ptr, len) = unsafe { (*inputs.add(k), *input_bytes.add(k)) };
            slice(k, "input", io, ptr, len)?;
            // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
            let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
            ins.push(TensorRef::from_bytes(io.dtype, &io.shape, bytes).map_err(|e| invalid(e.to_string()))?);
        }
        let mut outs = Vec::with_capacity(n_outputs);
        for (k, io) in m.outputs.iter().enumerate() {
            // SAFETY: as for the inputs.
            let (ptr, len) = unsafe { (*outputs.add(k), *output_bytes.add(k)) };
            slice(k, "output", io, ptr, len)?;
            // SAFETY: the caller guarantees `len` writable bytes at `ptr`, not aliased.
            let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
            outs.push(TensorMut::from_bytes(io.dtype, &io.shape, bytes).map_err(|e| invalid(e.to_string()))?);
        }
        m.model.run_into(&ins, &mut outs).map_err(run_error)
    })
}
