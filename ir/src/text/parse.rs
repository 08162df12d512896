//! Parsing the IR text form back into a graph.

use std::collections::HashMap;

use crate::attrs::{AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::{format_type, short_hash};
use crate::graph::{Graph, ValueId};
use crate::ops::{Activation, Elementwise, Expr, Fused, Op, Step};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Tensor, checked_numel};

/// Constants that printed as a hash, by dtype, shape and hash.
#[derive(Default)]
pub struct ConstPool {
    map: HashMap<(DType, Vec<usize>, String), Tensor>,
}

impl ConstPool {
    /// Every constant of a graph.
    pub fn from_graph(g: &Graph) -> ConstPool {
        let mut pool = ConstPool::default();
        for id in g.node_ids() {
            if let Op::Const(c) = &g.node(id).op {
                pool.insert(c.value.clone());
            }
        }
        pool
    }

    pub fn insert(&mut self, t: Tensor) {
        self.map.insert((t.dtype(), t.shape().to_vec(), short_hash(&t)), t);
    }
}

/// Parses a graph whose constants are all inline or `random(..)`.
pub fn parse(text: &str) -> Result<Graph> {
    parse_with(text, &ConstPool::default())
}

/// Parses a graph, resolving hashed constants from `pool`.
pub fn parse_with(text: &str, pool: &ConstPool) -> Result<Graph> {
    let toks = lex(text)?;
    Parser { toks, pos: 0, pool, known: Default::default() }.graph()
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Value(String),
    NodeName(String),
    Ident(String),
    Str(String),
    Num(String),
    Hash(String),
    Punct(char),
    Eof,
}

struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn lex(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = vec![];
    let (mut i, mut line, mut col) = (0, 1, 1);
    let err = |line, col, msg: String| Error::Parse { line, col, msg };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0) = (line, col);
        let mut advance = |n: usize, i: &mut usize| {
            for k in 0..n {
                if chars.get(*i + k) == Some(&'\n') {
                    line += 1;
                    col = 1;
                } else {
                    col += 1;
                }
            }
            *i += n;
        };
        if c.is_whitespace() {
            advance(1, &mut i);
            continue;
        }
        if c == ';' {
            // Comment to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                advance(1, &mut i);
            }
            continue;
        }
        let read_str = |start: usize| -> Result<(String, usize)> {
            let mut s = String::new();
            let mut j = start + 1;
            loop {
                match chars.get(j) {
                    None => return Err(err(l0, c0, "unterminated string".into())),
                    Some('"') => return Ok((s, j + 1 - start)),
                    Some('\\') => {
                        match chars.get(j + 1) {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some('"') => s.push('"'),
                            Some('\\') => s.push('\\'),
                            Some('u') => {
                                // Only `\u{HEX}`: anything else (`\u}`, `\ux}`) would slice backwards.
                                let end = (j..chars.len())
                                    .find(|&k| chars[k] == '}')
                                    .filter(|&e| chars.get(j + 2) == Some(&'{') && e >= j + 3)
                                    .ok_or_else(|| err(l0, c0, "bad \\u escape".into()))?;
                                let hex: String = chars[j + 3..end].iter().collect();
                                let ch = u32::from_str_radix(&hex, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| err(l0, c0, "bad \\u escape".into()))?;
                                s.push(ch);
                                j = end - 1;
                            }
                            _ => return Err(err(l0, c0, "bad escape in string".into())),
                        }
                        j += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        j += 1;
                    }
                }
            }
        };
        let read_plain = |start: usize| -> (String, usize) {
            let mut j = start;
            while j < chars.len() && plain(chars[j]) {
                j += 1;
            }
            (chars[start..j].iter().collect(), j - start)
        };
        let tok = match c {
            '%' | '@' => {
                let (s, n) = if chars.get(i + 1) == Some(&'"') { read_str(i + 1)? } else { read_plain(i + 1) };
                if s.is_empty() {
                    return Err(err(l0, c0, format!("expected a name after '{c}'")));
                }
                advance(n + 1, &mut i);
                if c == '%' { Tok::Value(s) } else { Tok::NodeName(s) }
            }
            '"' => {
                let (s, n) = read_str(i)?;
                advance(n, &mut i);
                Tok::Str(s)
            }
            '#' => {
                let (s, n) = read_plain(i + 1);
                advance(n + 1, &mut i);
                Tok::Hash(s)
            }
            '{' | '}' | '(' | ')' | '[' | ']' | '=' | ',' | ':' => {
                advance(1, &mut i);
                Tok::Punct(c)
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || matches!(chars[j], '.' | '-' | '+')) {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                advance(j - i, &mut i);
                Tok::Num(s)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                advance(j - i, &mut i);
                Tok::Ident(s)
            }
            other => return Err(err(l0, c0, format!("unexpected character '{other}'"))),
        };
        toks.push(Token { tok, line: l0, col: c0 });
    }
    toks.push(Token { tok: Tok::Eof, line, col });
    Ok(toks)
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    pool: &'a ConstPool,
    /// Values inference learned so far (shape subgraphs), as during import.
    known: crate::infer::KnownValues,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].tok.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T> {
        let t = &self.toks[self.pos];
        Err(Error::Parse { line: t.line, col: t.col, msg: msg.into() })
    }

    fn expect(&mut self, c: char) -> Result<()> {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            Ok(())
        } else {
            self.err(format!("expected '{c}', found {:?}", self.peek()))
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, k: &str) -> Result<()> {
        match self.peek() {
            Tok::Ident(s) if s == k => {
                self.next();
                Ok(())
            }
            t => self.err(format!("expected '{k}', found {t:?}")),
        }
    }

    fn graph(&mut self) -> Result<Graph> {
        self.keyword("graph")?;
        let name = match self.next() {
            Tok::Str(s) | Tok::Ident(s) => s,
            _ => return self.err("expected the graph name"),
        };
        self.expect('{')?;
        let mut g = Graph::new(&name);
        let mut outputs_set = false;
        loop {
            match self.peek().clone() {
                Tok::Punct('}') => {
                    self.next();
                    break;
                }
                Tok::Ident(k) if k == "input" => {
                    self.next();
                    let Tok::Value(v) = self.next() else { return self.err("expected %name after 'input'") };
                    self.expect(':')?;
                    let ty = self.ty()?;
                    g.add_input(&v, ty).or_else(|e| self.err(e.to_string()))?;
                }
                Tok::Ident(k) if k == "output" => {
                    if outputs_set {
                        return self.err("a second 'output' line: list every output in one (output %a, %b)");
                    }
                    self.next();
                    let mut outs = vec![];
                    loop {
                        outs.push(self.value_ref(&g)?);
                        if !self.eat(',') {
                            break;
                        }
                    }
                    g.set_outputs(outs);
                    outputs_set = true;
                }
                Tok::Value(_) => self.node(&mut g)?,
                t => return self.err(format!("expected a statement, found {t:?}")),
            }
        }
        if *self.peek() != Tok::Eof {
            return self.err("text after the end of the graph");
        }
        if !outputs_set {
            return self.err("the graph has no 'output' line");
        }
        Ok(g)
    }

    fn value_ref(&mut self, g: &Graph) -> Result<ValueId> {
        // Errors point at the offending token, so it is only consumed on success.
        match self.peek() {
            Tok::Value(v) => match g.value_by_name(v) {
                Some(id) => {
                    self.next();
                    Ok(id)
                }
                None => self.err(format!("value %{v} is not defined before this use")),
            },
            t => self.err(format!("expected a %value, found {t:?}")),
        }
    }

    fn node(&mut self, g: &mut Graph) -> Result<()> {
        let mut outs = vec![];
        loop {
            let Tok::Value(v) = self.next() else { return self.err("expected %name") };
            outs.push(v);
            if !self.eat(',') {
                break;
            }
        }
        self.expect('=')?;
        let start = self.pos;
        let Tok::Ident(op_name) = self.next() else { return self.err("expected an op name") };
        if op_name == "const" {
            let t = self.const_value()?;
            let name = self.node_name().unwrap_or_else(|| outs[0].clone());
            if outs.len() != 1 {
                return self.err("a constant has one output");
            }
            let v = g.add_const(&outs[0], t).or_else(|e| self.err(e.to_string()))?;
            g.node_mut(v.node).name = name;
            return Ok(());
        }
        self.expect('(')?;
        let mut inputs = vec![];
        if !self.eat(')') {
            loop {
                if *self.peek() == Tok::Ident("_".into()) {
                    self.next();
                    inputs.push(None);
                } else {
                    inputs.push(Some(self.value_ref(g)?));
                }
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        let mut attrs = vec![];
        if self.eat('{') && !self.eat('}') {
            loop {
                let Tok::Ident(k) = self.next() else { return self.err("expected an attribute name") };
                self.expect('=')?;
                let v = self.attr_value()?;
                attrs.push((k, v));
                if self.eat('}') {
                    break;
                }
                self.expect(',')?;
            }
        }
        // Fused ops: `epilogue(add %r, relu)` after a base op, or `expr(...)` for Elementwise.
        let mut steps: Option<Vec<Step>> = None;
        let mut expr = None;
        if let Tok::Ident(k) = self.peek().clone() {
            if k == "epilogue" {
                self.next();
                steps = Some(self.epilogue(g, &mut inputs)?);
            } else if k == "expr" {
                self.next();
                self.expect('(')?;
                expr = Some(self.expr(g, &inputs)?);
                self.expect(')')?;
            }
        }
        self.expect(':')?;
        let mut types = vec![self.ty()?];
        while self.eat(',') {
            types.push(self.ty()?);
        }
        let name = self.node_name().unwrap_or_else(|| outs[0].clone());
        let here = self.pos;
        self.pos = start;
        let extra = steps.as_ref().map_or(0, |s| s.iter().filter(|s| matches!(s, Step::Add { .. })).count());
        let base_inputs = inputs.len() - extra;
        let op = match (expr, op_name.as_str()) {
            (Some(expr), "Elementwise") => Op::Elementwise(Elementwise { expr }),
            (None, "Elementwise") => return self.err("Elementwise needs an expr(...) clause"),
            (Some(_), _) => return self.err("only Elementwise takes an expr(...) clause"),
            (None, _) => {
                let base =
                    Op::from_attrs(&op_name, Attrs::new(attrs)).or_else(|e| self.err(format!("{op_name}: {e}")))?;
                match steps {
                    Some(steps) => Op::Fused(Fused { base: Box::new(base), base_inputs, steps }),
                    None => base,
                }
            }
        };
        if types.len() != outs.len() {
            return self.err(format!("{} outputs but {} types", outs.len(), types.len()));
        }
        let id = match g.add_node_known(&name, op, inputs, outs, &mut self.known) {
            Ok(id) => id,
            Err(e) => return self.err(e.to_string()),
        };
        for (v, want) in g.node(id).outputs.iter().zip(&types) {
            if v.ty != *want {
                return self.err(format!(
                    "%{} is declared {} but infers as {}",
                    v.name,
                    format_type(want),
                    format_type(&v.ty)
                ));
            }
        }
        self.pos = here;
        Ok(())
    }

    /// `(step, ...)` after `epilogue`; `add %v` appends %v to the node's inputs.
    fn epilogue(&mut self, g: &Graph, inputs: &mut Vec<Option<ValueId>>) -> Result<Vec<Step>> {
        self.expect('(')?;
        let mut steps = vec![];
        loop {
            let Tok::Ident(name) = self.next() else { return self.err("expected an epilogue step") };
            if name == "add" {
                let v = self.value_ref(g)?;
                inputs.push(Some(v));
                steps.push(Step::Add { operand: inputs.len() - 1 });
            } else {
                let params = if self.eat('(') { self.params()? } else { vec![] };
                steps.push(Step::Act(Activation::from_text(&name, &params).or_else(|e| self.err(e.to_string()))?));
            }
            if self.eat(')') {
                return Ok(steps);
            }
            self.expect(',')?;
        }
    }

    /// Numeric parameters up to and including `)`; `_` is an absent one.
    fn params(&mut self) -> Result<Vec<Option<f32>>> {
        let mut out = vec![];
        loop {
            if *self.peek() == Tok::Ident("_".into()) {
                self.next();
                out.push(None);
            } else {
                let (n, _) = self.number()?;
                match parse_f32(&n) {
                    Some(v) => out.push(Some(v)),
                    None => return self.err(format!("bad number '{n}'")),
                }
            }
            if self.eat(')') {
                return Ok(out);
            }
            self.expect(',')?;
        }
    }

    /// An elementwise expression over the node's inputs, of at most `Expr::MAX_OPS` ops.
    fn expr(&mut self, g: &Graph, inputs: &[Option<ValueId>]) -> Result<Expr> {
        let mut ops = 0;
        self.expr_within(g, inputs, &mut ops)
    }

    /// An expression, counting its ops into `ops` and refusing more than `Expr::MAX_OPS` before
    /// nesting deeper (so no input can recurse further).
    fn expr_within(&mut self, g: &Graph, inputs: &[Option<ValueId>], ops: &mut usize) -> Result<Expr> {
        if let Tok::Value(_) = self.peek() {
            let v = self.value_ref(g)?;
            return match inputs.iter().position(|i| *i == Some(v)) {
                Some(i) => Ok(Expr::Input(i)),
                None => self.err(format!("%{} is not an input of this node", g.value(v).name)),
            };
        }
        let Tok::Ident(name) = self.next() else { return self.err("expected a function or a %value") };
        *ops += 1;
        if *ops > Expr::MAX_OPS {
            return self.err(format!("an expression of more than {} ops", Expr::MAX_OPS));
        }
        self.expect('(')?;
        let first = self.expr_within(g, inputs, ops)?;
        if let Some(b) = crate::ops::fused::binary_from_text(&name) {
            self.expect(',')?;
            let second = self.expr_within(g, inputs, ops)?;
            self.expect(')')?;
            return Ok(Expr::Binary(b, Box::new(first), Box::new(second)));
        }
        let params = if self.eat(',') {
            self.params()?
        } else {
            self.expect(')')?;
            vec![]
        };
        let act = Activation::from_text(&name, &params).or_else(|e| self.err(e.to_string()))?;
        Ok(Expr::Act(act, Box::new(first)))
    }

    fn node_name(&mut self) -> Option<String> {
        if let Tok::NodeName(n) = self.peek().clone() {
            self.next();
            Some(n)
        } else {
            None
        }
    }

    fn ty(&mut self) -> Result<TensorType> {
        let Tok::Ident(d) = self.next() else { return self.err("expected a type such as f32[1,3]") };
        let Some(dtype) = DType::from_name(&d) else { return self.err(format!("unknown dtype '{d}'")) };
        self.expect('[')?;
        let mut shape = vec![];
        if !self.eat(']') {
            loop {
                match self.next() {
                    Tok::Num(n) => match n.parse::<usize>() {
                        Ok(v) => shape.push(Dim::Known(v)),
                        Err(_) => return self.err(format!("bad dimension '{n}'")),
                    },
                    Tok::Ident(s) | Tok::Str(s) => shape.push(Dim::Sym(s)),
                    _ => return self.err("expected a dimension"),
                }
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(TensorType::new(dtype, shape))
    }

    fn number(&mut self) -> Result<(String, bool)> {
        let n = match self.peek() {
            Tok::Num(n) => {
                let is_float = n.contains(['.', 'e', 'E']) || n.contains("inf") || n.contains("nan");
                (n.clone(), is_float)
            }
            Tok::Ident(s) if s == "nan" || s == "inf" => (s.clone(), true),
            t => return self.err(format!("expected a number, found {t:?}")),
        };
        self.next();
        Ok(n)
    }

    fn attr_value(&mut self) -> Result<AttrValue> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(AttrValue::Str(s))
            }
            Tok::Ident(k) if k == "const" => {
                self.next();
                Ok(AttrValue::Tensor(self.const_value()?))
            }
            Tok::Punct('[') => {
                self.next();
                if self.eat(']') {
                    return Ok(AttrValue::Ints(vec![]));
                }
                if let Tok::Str(_) = self.peek() {
                    let mut v = vec![];
                    loop {
                        let Tok::Str(s) = self.next() else { return self.err("expected a string") };
                        v.push(s);
                        if self.eat(']') {
                            return Ok(AttrValue::Strs(v));
                        }
                        self.expect(',')?;
                    }
                }
                let mut nums = vec![];
                loop {
                    nums.push(self.number()?);
                    if self.eat(']') {
                        break;
                    }
                    self.expect(',')?;
                }
                if nums.iter().any(|(_, f)| *f) {
                    let v = nums.iter().map(|(n, _)| parse_f32(n)).collect::<Option<Vec<f32>>>();
                    match v {
                        Some(v) => Ok(AttrValue::Floats(v)),
                        None => self.err("bad float list"),
                    }
                } else {
                    match nums.iter().map(|(n, _)| n.parse::<i64>().ok()).collect::<Option<Vec<i64>>>() {
                        Some(v) => Ok(AttrValue::Ints(v)),
                        None => self.err("bad int list"),
                    }
                }
            }
            _ => {
                let (n, is_float) = self.number()?;
                if is_float {
                    match parse_f32(&n) {
                        Some(v) => Ok(AttrValue::Float(v)),
                        None => self.err(format!("bad float '{n}'")),
                    }
                } else {
                    match n.parse::<i64>() {
                        Ok(v) => Ok(AttrValue::Int(v)),
                        Err(_) => self.err(format!("bad integer '{n}'")),
                    }
                }
            }
        }
    }

    /// After `const`: a type, then a hash, `random(SEED)`, a scalar or a list of values.
    fn const_value(&mut self) -> Result<Tensor> {
        let ty = self.ty()?;
        let Some(dims) = ty.static_dims() else { return self.err("a constant needs a static shape") };
        let Some(numel) = checked_numel(&dims) else { return self.err("constant is too large") };
        match self.peek().clone() {
            Tok::Hash(h) => {
                self.next();
                match self.pool.map.get(&(ty.dtype, dims.clone(), h.clone())) {
                    Some(t) => Ok(t.clone()),
                    None => self.err(format!(
                        "constant {} #{h} is elided in the text form and not in the constant pool; \
                         write its values inline or use random(SEED)",
                        format_type(&ty)
                    )),
                }
            }
            Tok::Ident(k) if k == "random" => {
                self.next();
                self.expect('(')?;
                let (n, _) = self.number()?;
                let Ok(seed) = n.parse::<u64>() else { return self.err("random(SEED) needs an integer seed") };
                self.expect(')')?;
                let mut rng = SplitMix(seed);
                match ty.dtype {
                    DType::F32 => Ok(Tensor::from_vec(dims, (0..numel).map(|_| rng.uniform() as f32).collect())),
                    DType::F64 => Ok(Tensor::from_vec(dims, (0..numel).map(|_| rng.uniform()).collect())),
                    d => self.err(format!("random(..) makes f32 or f64 constants, not {d}")),
                }
            }
            _ => {
                let vals: Vec<String> = if self.eat('[') {
                    let mut v = vec![];
                    if !self.eat(']') {
                        loop {
                            v.push(self.literal()?);
                            if self.eat(']') {
                                break;
                            }
                            self.expect(',')?;
                        }
                    }
                    v
                } else {
                    vec![self.literal()?]
                };
                if vals.len() != numel {
                    return self.err(format!(
                        "constant {} needs {numel} values, found {}",
                        format_type(&ty),
                        vals.len()
                    ));
                }
                self.tensor_from_literals(ty.dtype, dims, &vals)
            }
        }
    }

    fn literal(&mut self) -> Result<String> {
        let v = match self.peek() {
            Tok::Num(n) => n.clone(),
            Tok::Ident(s) if matches!(s.as_str(), "true" | "false" | "nan" | "inf") => s.clone(),
            t => return self.err(format!("expected a value, found {t:?}")),
        };
        self.next();
        Ok(v)
    }

    fn tensor_from_literals(&self, dtype: DType, dims: Vec<usize>, vals: &[String]) -> Result<Tensor> {
        macro_rules! parse_all {
            ($t:ty) => {
                match vals.iter().map(|v| v.parse::<$t>().ok()).collect::<Option<Vec<$t>>>() {
                    Some(v) => Ok(Tensor::from_vec(dims, v)),
                    None => self.err(format!("bad {} value in {vals:?}", dtype)),
                }
            };
        }
        match dtype {
            DType::F32 => match vals.iter().map(|v| parse_f32(v)).collect::<Option<Vec<f32>>>() {
                Some(v) => Ok(Tensor::from_vec(dims, v)),
                None => self.err(format!("bad f32 value in {vals:?}")),
            },
            DType::F64 => match vals.iter().map(|v| parse_float(v)).collect::<Option<Vec<f64>>>() {
                Some(v) => Ok(Tensor::from_vec(dims, v)),
                None => self.err(format!("bad f64 value in {vals:?}")),
            },
            DType::Bool => Ok(Tensor::from_bools(dims, vals.iter().map(|v| v == "true" || v == "1").collect())),
            DType::I8 => parse_all!(i8),
            DType::U8 => parse_all!(u8),
            DType::I16 => parse_all!(i16),
            DType::U16 => parse_all!(u16),
            DType::I32 => parse_all!(i32),
            DType::U32 => parse_all!(u32),
            DType::I64 => parse_all!(i64),
            DType::U64 => parse_all!(u64),
            DType::F16 => match vals.iter().map(|v| v.parse::<u16>().ok()).collect::<Option<Vec<u16>>>() {
                Some(v) => {
                    let t = Tensor::from_vec(dims.clone(), v);
                    Tensor::from_bytes(DType::F16, dims, t.bytes().clone()).or_else(|e| self.err(e.to_string()))
                }
                None => self.err("bad f16 bits"),
            },
        }
    }
}

/// Parses an f32 directly (not through f64, which could round twice).
fn parse_f32(s: &str) -> Option<f32> {
    match s {
        "nan" => Some(f32::NAN),
        "inf" => Some(f32::INFINITY),
        "-inf" => Some(f32::NEG_INFINITY),
        _ => s.parse::<f32>().ok(),
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "nan" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

/// SplitMix64: a tiny, well-known generator for reproducible test weights.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}
