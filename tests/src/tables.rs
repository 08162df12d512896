//! All-pairs operand tables of the JIT tests: each row is a graph built from one level per
//! dimension, compiled every way and compared with the interpreter (see `graphs::check`).

use incept_compiler::Fault;
use incept_ir::graph::ValueId;

use crate::graphs::{CheckOptions, Gen, check};
use crate::pairwise::{Dim, Row, cover};

/// An optional trailing input in one of its three forms; `make` builds it when present.
pub fn optional(form: &str, ins: &mut Vec<Option<ValueId>>, make: impl FnOnce() -> ValueId) {
    match form {
        "omitted" => {}
        "empty" => ins.push(None),
        _ => ins.push(Some(make())),
    }
}

/// Drops trailing `None`s that stand for omitted inputs (an "omitted" input before a present
/// one must be written as empty, so a table row with that combination is invalid).
pub fn valid_order(forms: &[&str]) -> bool {
    let mut seen_present = false;
    for f in forms.iter().rev() {
        if *f != "omitted" {
            seen_present = true;
        } else if seen_present {
            return false;
        }
    }
    true
}

pub fn seed(family: &str, i: usize) -> u64 {
    family.bytes().fold(0x8422_2325_cbf2_9ce4u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
        ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

type Build = Box<dyn Fn(&mut Gen, &Row) -> Option<ValueId>>;
type Active = Box<dyn Fn(&Row, &str) -> bool>;

/// One all-pairs table: its dimensions, which rows are possible, which dimensions matter in a
/// row, and how a row becomes a graph.
pub struct Table {
    pub name: &'static str,
    dims: Vec<Dim>,
    valid: Box<dyn Fn(&Row) -> bool>,
    active: Active,
    build: Build,
    /// Outputs compared bit for bit (see `CheckOptions::exact`).
    exact: bool,
}

impl Table {
    pub fn new(
        name: &'static str,
        dims: Vec<Dim>,
        valid: impl Fn(&Row) -> bool + 'static,
        active: impl Fn(&Row, &str) -> bool + 'static,
        build: impl Fn(&mut Gen, &Row) -> Option<ValueId> + 'static,
    ) -> Table {
        Table { name, dims, valid: Box::new(valid), active: Box::new(active), build: Box::new(build), exact: false }
    }

    /// Compares outputs bit for bit.
    pub fn exact(self) -> Table {
        Table { exact: true, ..self }
    }

    /// Runs every row through `build` and `check` (with `mutate`, the output's producer is
    /// corrupted on purpose). Returns the number of rows, the failures, and the rows that passed.
    pub fn run(&self, mutate: bool) -> (usize, Vec<String>, Vec<String>) {
        let rows = cover(&self.dims, &self.valid, &self.active);
        let (mut failures, mut passed) = (vec![], vec![]);
        for (i, row) in rows.iter().enumerate() {
            let s = seed(self.name, i);
            let mut r = Gen::new(s);
            let case = format!("row {i} [{}] seed {s}", row.describe());
            let Some(out) = (self.build)(&mut r, row) else {
                failures.push(format!("{} {case}: not a valid graph: {:?}", self.name, r.desc));
                continue;
            };
            let shape = r.shape(out);
            if shape.contains(&0) {
                failures.push(format!("{} {case}: an empty output {shape:?} tests nothing", self.name));
                continue;
            }
            let fault = mutate.then(|| Fault::Corrupt { node: r.g.node(out.node).name.clone() });
            match check(r, out, self.name, &case, &CheckOptions { fault, exact: self.exact, ..Default::default() }) {
                Ok(_) => passed.push(case),
                Err(e) => failures.push(e),
            }
        }
        (rows.len(), failures, passed)
    }

    pub fn passes(&self) {
        let (n, failures, _) = self.run(false);
        println!("{}: {n} rows (all pairs) checked", self.name);
        assert!(failures.is_empty(), "{} of {n} rows failed; first:\n{}", failures.len(), failures[0]);
    }
}
