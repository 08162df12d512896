//! `--shape NAME=D0,D1,...` and `--dim SYMBOL=N`: fixing shapes the model leaves symbolic.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use incept_ir::onnx::{self, ImportOptions};
use incept_ir::{Graph, Tensor};

/// Shape options shared by the subcommands that load a model.
#[derive(Args, Clone, Debug, Default)]
pub struct ShapeArgs {
    /// Fix the shape of a graph input, e.g. `--shape input=1,3,224,224` (repeatable).
    #[arg(long = "shape", value_name = "NAME=D0,D1,...")]
    pub shapes: Vec<String>,
    /// Bind a symbolic dimension, e.g. `--dim N=1` for a dynamic batch (repeatable).
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

/// Loads a model with the user's shape options, plus the shapes of the given input tensors for
/// inputs the user did not fix (so a dynamic batch binds to the data it runs on).
pub fn load_model(path: &Path, shapes: &ShapeArgs, inputs: &[(Option<String>, Tensor)]) -> Result<Graph> {
    let opts = shapes.import_options()?;
    onnx::load_for_inputs(path, &opts, inputs).map_err(|e| match e {
        // The I/O error already names the file.
        incept_ir::Error::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("cannot load '{}'", path.display())),
    })
}
