//! `--shape NAME=D0,D1,...` and `--dim SYMBOL=N`: fixing shapes the model leaves symbolic.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use incept_ir::onnx::proto::ModelProto;
use incept_ir::onnx::{self, ImportOptions};
use incept_ir::{Graph, Tensor};

/// Shape options shared by the subcommands that load a model.
#[derive(Args, Clone, Debug, Default)]
pub struct ShapeArgs {
    /// Fix the shape of a graph input, e.g. `--shape input=1,3,224,224` (repeatable).
    #[arg(long = "shape", value_name = "NAME=D0,D1,...")]
    pub shapes: Vec<String>,
    /// Bind a symbolic dimension, e.g. `--dim N=8` for a dynamic batch (repeatable). compile,
    /// bench, check and run bind any left open to the shapes of their input data, else to 1
    /// (with a note on stderr); inspect shows them as they are.
    #[arg(long = "dim", value_name = "SYMBOL=N")]
    pub dims: Vec<String>,
}

fn split_eq<'a>(s: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    match s.rsplit_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => bail!("{flag} expects KEY=VALUE, got '{s}'"),
    }
}

impl ShapeArgs {
    pub fn import_options(&self) -> Result<ImportOptions> {
        let mut opts = ImportOptions::default();
        for s in &self.shapes {
            let (name, dims) = split_eq(s, "--shape")?;
            let dims: Vec<usize> = dims
                .split(',')
                .map(|d| d.trim().parse::<usize>().with_context(|| format!("--shape {s}: '{d}' is not a dimension")))
                .collect::<Result<_>>()?;
            opts.input_shapes.insert(name.to_string(), dims);
        }
        for s in &self.dims {
            let (sym, n) = split_eq(s, "--dim")?;
            let n: usize = n.parse().with_context(|| format!("--dim {s}: '{n}' is not a size"))?;
            opts.dims.insert(sym.to_string(), n);
        }
        Ok(opts)
    }
}

/// `--outputs`: feature extraction, for the subcommands that compile or load a model.
#[derive(Args, Clone, Debug, Default)]
pub struct CutArgs {
    /// Feature extraction: make these values the model's outputs, in this order, and keep only
    /// what they need (comma-separated or repeated). Names as `incept inspect -O0` prints them,
    /// with or without the % and quotes; an unknown name is an error listing the closest ones.
    /// The cut is made before the passes, so fusion keeps these values; graph inputs they do not
    /// read are dropped. An `.incept` artifact is cut when compiled: give --outputs to `compile`.
    // Its own id: `run` already has an `outputs` argument (-o).
    #[arg(id = "cut_outputs", long = "outputs", value_delimiter = ',', value_name = "NAME[,NAME...]")]
    pub outputs: Vec<String>,
}

impl CutArgs {
    /// Cuts `g` at the given values (nothing to do without `--outputs`).
    pub fn apply(&self, g: &mut Graph) -> Result<()> {
        if !self.outputs.is_empty() {
            incept_ir::cut::cut(g, &self.outputs).context("--outputs")?;
        }
        Ok(())
    }

    /// An artifact is machine code without its graph: there is nothing left to cut.
    pub fn refuse_for_artifact(&self, path: &Path) -> Result<()> {
        if !self.outputs.is_empty() {
            bail!(
                "'{}' is a compiled artifact: --outputs applies when compiling (`incept compile MODEL.onnx --outputs ... -o FILE.incept`)",
                path.display()
            );
        }
        Ok(())
    }
}

/// One dimension of a graph input as the model declares it.
#[derive(Clone, Debug, PartialEq)]
pub enum DeclaredDim {
    Known(usize),
    /// A named symbolic dimension (`N`), shared by every input that names it.
    Symbol(String),
    /// A dimension with neither a size nor a name.
    Unnamed,
}

/// A graph input (not an initializer) as the model file declares it.
#[derive(Clone, Debug)]
pub struct DeclaredInput {
    pub name: String,
    /// The element type's name (`f32`), or the ONNX code when incept has no such type.
    pub dtype: String,
    /// `None`: the model gives no shape.
    pub dims: Option<Vec<DeclaredDim>>,
}

impl DeclaredInput {
    /// `f32[N,3,64,64]`, as `incept inspect` prints types.
    fn type_text(&self) -> String {
        let dims: Vec<String> = match &self.dims {
            Some(d) => d
                .iter()
                .map(|d| match d {
                    DeclaredDim::Known(n) => n.to_string(),
                    DeclaredDim::Symbol(s) => s.clone(),
                    DeclaredDim::Unnamed => "?".into(),
                })
                .collect(),
            None => vec!["?".into()],
        };
        format!("{}[{}]", self.dtype, dims.join(","))
    }
}

/// The graph inputs of a decoded model, in order.
pub fn declared_inputs(model: &ModelProto) -> Vec<DeclaredInput> {
    use incept_ir::onnx::proto::{DimensionValue, TypeValue};
    let Some(graph) = &model.graph else { return vec![] };
    let names = onnx::graph_input_names(model);
    graph
        .input
        .iter()
        .filter(|vi| names.contains(&vi.name))
        .map(|vi| {
            let tensor = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(TypeValue::TensorType(t)) => Some(t),
                _ => None,
            };
            let dtype = tensor.map_or_else(
                || "?".to_string(),
                |t| {
                    incept_ir::DType::from_onnx(t.elem_type)
                        .map_or_else(|| format!("type {}", t.elem_type), |d| d.to_string())
                },
            );
            let dims = tensor.and_then(|t| t.shape.as_ref()).map(|shape| {
                shape
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimensionValue::DimValue(v)) if *v >= 0 => DeclaredDim::Known(*v as usize),
                        Some(DimensionValue::DimParam(p)) if !p.is_empty() => DeclaredDim::Symbol(p.clone()),
                        _ => DeclaredDim::Unnamed,
                    })
                    .collect()
            });
            DeclaredInput { name: vi.name.clone(), dtype, dims }
        })
        .collect()
}

/// Fails, blaming the data file, when data of shape `got` read from `source` cannot feed the
/// input `input` of `model`, declared as `type_text` with dimensions `want` (symbolic ones
/// resolved with `dims` where bound; unbound ones take any size). When the dimensions are a
/// permutation of the expected ones it adds a layout hint: NHWC data for an NCHW model is the
/// usual mistake.
pub fn check_data_shape(
    source: &str,
    got: &[usize],
    input: &str,
    model: &Path,
    type_text: &str,
    want: &[DeclaredDim],
    dims: &HashMap<String, usize>,
) -> Result<()> {
    let what = format!("input file '{source}' has shape {got:?}");
    let model = model.display();
    if got.len() != want.len() {
        bail!(
            "{what} ({} dimensions), but input '{input}' of '{model}' is {type_text} ({} dimensions)",
            got.len(),
            want.len()
        );
    }
    // Expected sizes, with unbound symbols taking the data's own size.
    let expected: Vec<usize> = want
        .iter()
        .zip(got)
        .map(|(w, &g)| match w {
            DeclaredDim::Known(n) => *n,
            DeclaredDim::Symbol(s) => dims.get(s).copied().unwrap_or(g),
            DeclaredDim::Unnamed => g,
        })
        .collect();
    if expected == got {
        return Ok(());
    }
    let (mut a, mut b) = (expected.clone(), got.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    let e = &expected;
    let hint = if a != b {
        String::new()
    } else if got.len() == 4 && got == [e[0], e[2], e[3], e[1]] {
        format!(
            "; it looks like NHWC (channels-last) data for an NCHW model: transpose it to {e:?} (numpy: x.transpose(0, 3, 1, 2))"
        )
    } else if got.len() == 4 && got == [e[0], e[3], e[1], e[2]] {
        format!(
            "; it looks like NCHW data for an NHWC (channels-last) model: transpose it to {e:?} (numpy: x.transpose(0, 2, 3, 1))"
        )
    } else {
        format!("; the same dimensions in another order (another layout, NHWC vs NCHW?): the model wants {e:?}")
    };
    bail!("{what}, but input '{input}' of '{model}' is {type_text}{hint}")
}

/// Checks each given tensor against the graph input it will bind to, before import, so that a
/// wrong shape is blamed on the data file (with the expected shape) rather than on the model.
/// Inputs whose shape the user fixed with --shape are left to the later checks.
fn check_input_files(
    path: &Path,
    model: &ModelProto,
    opts: &ImportOptions,
    inputs: &[(Option<String>, Tensor)],
    sources: &[String],
) -> Result<()> {
    let declared = declared_inputs(model);
    let all_named = inputs.iter().all(|(n, _)| n.is_some());
    for (i, (name, t)) in inputs.iter().enumerate() {
        let target = if all_named { declared.iter().find(|d| Some(&d.name) == name.as_ref()) } else { declared.get(i) };
        let Some(target) = target else { continue };
        let Some(want) = &target.dims else { continue };
        if opts.input_shapes.contains_key(&target.name) {
            continue;
        }
        let source = sources.get(i).map_or("?", String::as_str);
        check_data_shape(source, t.shape(), &target.name, path, &target.type_text(), want, &opts.dims)?;
    }
    Ok(())
}

/// Binds every symbolic dimension of the graph inputs that `opts` leaves open, so that a model
/// with a dynamic batch compiles without flags: a symbol that an input of fixed shape (from
/// --shape or from the data) has takes that size, any other takes 1 with a note on stderr
/// saying how to choose. Only the command line does this; the library refuses unbound dims.
pub fn bind_open_dims(model: &ModelProto, opts: &mut ImportOptions) {
    let declared = declared_inputs(model);
    // Sizes that inputs of fixed shape give their symbols.
    for d in &declared {
        let (Some(dims), Some(shape)) = (&d.dims, opts.input_shapes.get(&d.name)) else { continue };
        for (dim, &n) in dims.iter().zip(shape) {
            if let DeclaredDim::Symbol(sym) = dim {
                opts.dims.entry(sym.clone()).or_insert(n);
            }
        }
    }
    for d in &declared {
        let Some(dims) = &d.dims else { continue };
        if opts.input_shapes.contains_key(&d.name) {
            continue;
        }
        for dim in dims {
            if let DeclaredDim::Symbol(sym) = dim
                && !opts.dims.contains_key(sym)
            {
                opts.dims.insert(sym.clone(), 1);
                eprintln!("note: symbolic dimension {sym} bound to 1; use --dim {sym}=... to choose");
            }
        }
        if dims.contains(&DeclaredDim::Unnamed) {
            // No symbol to bind: fix the whole shape.
            let shape: Vec<usize> = dims
                .iter()
                .map(|dim| match dim {
                    DeclaredDim::Known(n) => *n,
                    DeclaredDim::Symbol(sym) => opts.dims.get(sym).copied().unwrap_or(1),
                    DeclaredDim::Unnamed => 1,
                })
                .collect();
            eprintln!(
                "note: input '{}' {} has dimensions without a size or a name (?), bound to 1; use --shape {}=... to choose",
                d.name,
                d.type_text(),
                d.name
            );
            opts.input_shapes.insert(d.name.clone(), shape);
        }
    }
}

/// The import options of a model file with its open symbolic dims bound (see
/// [`bind_open_dims`]) given the user's options and the shapes of `inputs` (in order): what
/// `compile` and `bench` import with. A file that cannot be read is left for the import to
/// report.
pub fn options_for_file(path: &Path, opts: &ImportOptions, inputs: &[(Option<String>, Tensor)]) -> ImportOptions {
    match onnx::open(path) {
        Ok((model, _)) => {
            let mut opts = onnx::options_for_inputs(&model, opts, inputs);
            bind_open_dims(&model, &mut opts);
            opts
        }
        Err(_) => opts.clone(),
    }
}

/// Loads a model with the user's shape options, plus the shapes of the given input tensors for
/// inputs the user did not fix (so a dynamic batch binds to the data it runs on). `sources`
/// names the file each input came from, for errors. With `bind_open`, symbolic dims still open
/// after that are bound too (see [`bind_open_dims`]), for commands that need static shapes.
pub fn load_model(
    path: &Path,
    shapes: &ShapeArgs,
    inputs: &[(Option<String>, Tensor)],
    sources: &[String],
    bind_open: bool,
) -> Result<Graph> {
    let opts = shapes.import_options()?;
    let wrap = |e: incept_ir::Error| match e {
        // The I/O error already names the file.
        incept_ir::Error::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("cannot load '{}'", path.display())),
    };
    let (model, ext) = onnx::open(path).map_err(wrap)?;
    if let Err(data) = check_input_files(path, &model, &opts, inputs, sources) {
        // Operators incept cannot import are the first thing to fix, whatever the data.
        if let Err(e @ incept_ir::Error::UnsupportedOps(_)) = onnx::import_model(&model, &ext, &opts) {
            return Err(wrap(e));
        }
        return Err(data);
    }
    let mut opts = onnx::options_for_inputs(&model, &opts, inputs);
    if bind_open {
        bind_open_dims(&model, &mut opts);
    }
    onnx::import_model(&model, &ext, &opts).map_err(wrap)
}
