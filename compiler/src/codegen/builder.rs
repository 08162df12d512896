//! A thin layer over Cranelift's `FunctionBuilder` for writing kernels: the kernel signature,
//! operand pointers, constants, f32 and f32x4 loads and stores, counted loops and FMA.
//!
//! Every kernel has the runtime's ABI `fn(args: *const *mut u8, begin: usize, end: usize)`.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, SigRef, Signature, Type, UserFuncName, Value, types,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

pub use cranelift_codegen::ir::types::{F32, F32X4, I8, I32, I64};

/// Builds one kernel function.
pub struct Kb<'a> {
    pub b: FunctionBuilder<'a>,
    args: Value,
    pub begin: Value,
    pub end: Value,
    operands: HashMap<usize, Value>,
    fma: bool,
    unary_sig: Option<SigRef>,
    binary_sig: Option<SigRef>,
    /// Signatures of helpers on other types, by (argument type, arity).
    sigs: HashMap<(Type, usize), SigRef>,
    /// Signatures of calls to other kernels' code (n i64 arguments, no result).
    void_sigs: HashMap<usize, SigRef>,
}

/// Flags for loads of memory the kernel never writes (inputs, weights): they may move and merge.
pub fn ro() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly().with_can_move()
}

/// Flags for ordinary loads and stores.
pub fn rw() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The kernel signature for an ISA.
pub fn kernel_signature(isa: &dyn TargetIsa) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    for _ in 0..3 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// Whether the ISA has fused multiply-add (else `fma` would become a libcall).
pub fn has_fma(isa: &dyn TargetIsa) -> bool {
    isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool().unwrap_or(false))
}

/// Creates a function with the kernel signature and runs `body` to fill it.
pub fn build_kernel(isa: &dyn TargetIsa, id: u32, body: impl FnOnce(&mut Kb)) -> Function {
    let mut func = Function::with_name_signature(UserFuncName::user(0, id), kernel_signature(isa));
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let mut kb = Kb {
            b,
            args: p[0],
            begin: p[1],
            end: p[2],
            operands: HashMap::new(),
            fma: has_fma(isa),
            unary_sig: None,
            binary_sig: None,
            sigs: HashMap::new(),
            void_sigs: HashMap::new(),
        };
        body(&mut kb);
        kb.b.ins().return_(&[]);
        kb.b.seal_all_blocks();
        kb.b.finalize(isa.frontend_config());
    }
    func
}

impl Kb<'_> {
    /// The pointer in operand slot `i` (loaded once, in the entry block, on first use).
    pub fn operand(&mut self, i: usize) -> Value {
        if let Some(&v) = self.operands.get(&i) {
            return v;
        }
        // Plain flags: the pointer loads stay in the entry block instead of being rematerialised
        // next to their uses.
        let v = self.b.ins().load(I64, rw(), self.args, (i * 8) as i32);
        self.operands.insert(i, v);
        v
    }

    /// The pointer in operand slot `first + index` for a run-time index (a kernel picked per
    /// tile from a run of kernel operands).
    pub fn operand_at(&mut self, first: usize, index: Value) -> Value {
        let off = self.muli(index, 8);
        let off = self.addi(off, (first * 8) as i64);
        let at = self.b.ins().iadd(self.args, off);
        self.b.ins().load(I64, rw(), at, 0)
    }

    /// Loads every operand pointer up front (call in the entry block so they dominate all uses).
    pub fn operands(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|i| self.operand(i)).collect()
    }

    pub fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub fn fconst(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    pub fn vconst(&mut self, v: f32) -> Value {
        let s = self.fconst(v);
        self.b.ins().splat(F32X4, s)
    }

    pub fn splat(&mut self, v: Value) -> Value {
        self.b.ins().splat(F32X4, v)
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().iadd(a, b)
    }

    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().imul(a, b)
    }

    /// `a + c` for a constant c.
    pub fn addi(&mut self, a: Value, c: i64) -> Value {
        if c == 0 {
            return a;
        }
        let k = self.iconst(c);
        self.b.ins().iadd(a, k)
    }

    /// `a * c` for a constant c.
    pub fn muli(&mut self, a: Value, c: i64) -> Value {
        if c == 1 {
            return a;
        }
        let k = self.iconst(c);
        self.b.ins().imul(a, k)
    }

    /// `a / c` and `a % c` (unsigned) for a positive constant c.
    pub fn divmod(&mut self, a: Value, c: i64) -> (Value, Value) {
        if c == 1 {
            let z = self.iconst(0);
            return (a, z);
        }
        let k = self.iconst(c);
        let q = self.b.ins().udiv(a, k);
        let qc = self.b.ins().imul(q, k);
        let r = self.b.ins().isub(a, qc);
        (q, r)
    }

    /// `base + index * bytes`.
    pub fn elem(&mut self, base: Value, index: Value, bytes: i64) -> Value {
        let off = self.muli(index, bytes);
        self.b.ins().iadd(base, off)
    }

    /// `base + index * stride` f32 elements: row `index` of a matrix with row stride `stride`.
    pub fn row(&mut self, base: Value, index: Value, stride: i64) -> Value {
        self.elem(base, index, 4 * stride)
    }

    pub fn load_f32(&mut self, p: Value, off: i32, flags: MemFlagsData) -> Value {
        self.b.ins().load(F32, flags, p, off)
    }

    pub fn store_f32(&mut self, v: Value, p: Value, off: i32) {
        self.b.ins().store(rw(), v, p, off);
    }

    pub fn load_v(&mut self, p: Value, off: i32, flags: MemFlagsData) -> Value {
        self.b.ins().load(F32X4, flags, p, off)
    }

    pub fn store_v(&mut self, v: Value, p: Value, off: i32) {
        self.b.ins().store(rw(), v, p, off);
    }

    /// `a * b + c` (fused when the host has FMA).
    pub fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }

    pub fn var(&mut self, ty: Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// `for i in (lo..hi).step_by(step)`, testing the condition at the top of the loop.
    pub fn for_range(&mut self, lo: Value, hi: Value, step: i64, mut body: impl FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::Value(lo)]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(go, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, i);
        let next = self.addi(i, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
    }

    /// A loop with constant bounds.
    pub fn for_const(&mut self, lo: i64, hi: i64, step: i64, body: impl FnMut(&mut Self, Value)) {
        if lo >= hi {
            return;
        }
        let (l, h) = (self.iconst(lo), self.iconst(hi));
        self.for_range(l, h, step, body);
    }

    /// Runs `body` when `cond` (an i8 condition) holds.
    pub fn if_then(&mut self, cond: Value, body: impl FnOnce(&mut Self)) {
        let then = self.b.create_block();
        let join = self.b.create_block();
        self.b.ins().brif(cond, then, &[], join, &[]);
        self.b.switch_to_block(then);
        body(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
    }

    /// `a == c` for a constant c.
    pub fn eqi(&mut self, a: Value, c: i64) -> Value {
        let k = self.iconst(c);
        self.b.ins().icmp(IntCC::Equal, a, k)
    }

    /// `c - a` for a constant c.
    pub fn rsubi(&mut self, c: i64, a: Value) -> Value {
        let k = self.iconst(c);
        self.b.ins().isub(k, a)
    }

    /// `min(a, c)` (signed) for a constant c.
    pub fn mini(&mut self, a: Value, c: i64) -> Value {
        let k = self.iconst(c);
        self.b.ins().smin(a, k)
    }

    /// `a < b` for signed integers.
    pub fn lt(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().icmp(IntCC::SignedLessThan, a, b)
    }

    /// `lo <= a < hi` for signed integers.
    pub fn in_range(&mut self, a: Value, lo: i64, hi: i64) -> Value {
        let l = self.iconst(lo);
        let h = self.iconst(hi);
        let c1 = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, a, l);
        let c2 = self.b.ins().icmp(IntCC::SignedLessThan, a, h);
        self.b.ins().band(c1, c2)
    }

    /// Calls helper `index` of the runtime's table (operand `table`) on one f32.
    pub fn call_unary(&mut self, table: Value, index: usize, x: Value) -> Value {
        let sig = *self.unary_sig.get_or_insert_with(|| {
            let mut s = Signature::new(cranelift_codegen::isa::CallConv::SystemV);
            s.params.push(AbiParam::new(F32));
            s.returns.push(AbiParam::new(F32));
            self.b.import_signature(s)
        });
        let f = self.b.ins().load(I64, ro(), table, (index * 8) as i32);
        let call = self.b.ins().call_indirect(sig, f, &[x]);
        self.b.inst_results(call)[0]
    }

    /// Calls two-argument helper `index` on two f32.
    pub fn call_binary(&mut self, table: Value, index: usize, x: Value, y: Value) -> Value {
        let sig = *self.binary_sig.get_or_insert_with(|| {
            let mut s = Signature::new(cranelift_codegen::isa::CallConv::SystemV);
            s.params.push(AbiParam::new(F32));
            s.params.push(AbiParam::new(F32));
            s.returns.push(AbiParam::new(F32));
            self.b.import_signature(s)
        });
        let f = self.b.ins().load(I64, ro(), table, (index * 8) as i32);
        let call = self.b.ins().call_indirect(sig, f, &[x, y]);
        self.b.inst_results(call)[0]
    }

    /// Calls helper `index` on scalars of one type (`ty -> ty`, as many arguments as given).
    pub fn call_helper(&mut self, table: Value, index: usize, args: &[Value]) -> Value {
        let ty = self.ty(args[0]);
        let sig = match self.sigs.get(&(ty, args.len())) {
            Some(&s) => s,
            None => {
                let mut s = Signature::new(cranelift_codegen::isa::CallConv::SystemV);
                for _ in args {
                    s.params.push(AbiParam::new(ty));
                }
                s.returns.push(AbiParam::new(ty));
                let r = self.b.import_signature(s);
                self.sigs.insert((ty, args.len()), r);
                r
            }
        };
        let f = self.b.ins().load(I64, ro(), table, (index * 8) as i32);
        let call = self.b.ins().call_indirect(sig, f, args);
        self.b.inst_results(call)[0]
    }

    /// Calls machine code at `f` (the System V ABI) with i64 arguments and no result: the wide
    /// tier's microkernels.
    pub fn call_code(&mut self, f: Value, args: &[Value]) {
        let sig = match self.void_sigs.get(&args.len()) {
            Some(&s) => s,
            None => {
                let mut s = Signature::new(cranelift_codegen::isa::CallConv::SystemV);
                for _ in args {
                    s.params.push(AbiParam::new(I64));
                }
                let r = self.b.import_signature(s);
                self.void_sigs.insert(args.len(), r);
                r
            }
        };
        self.b.ins().call_indirect(sig, f, args);
    }

    /// The address of a new stack slot of `bytes` bytes, 64-byte aligned.
    pub fn stack_buffer(&mut self, bytes: u32) -> Value {
        let slot = self.b.create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
            cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
            bytes,
            6,
        ));
        self.b.ins().stack_addr(I64, slot, 0)
    }

    /// Applies a scalar function to each lane of an f32x4.
    pub fn per_lane(&mut self, v: Value, mut f: impl FnMut(&mut Self, Value) -> Value) -> Value {
        let mut out = v;
        for lane in 0..4u8 {
            let x = self.b.ins().extractlane(v, lane);
            let y = f(self, x);
            out = self.b.ins().insertlane(out, y, lane);
        }
        out
    }

    /// `x < y` for floats (scalar or vector), as a mask usable by `select`/`bitselect`.
    pub fn flt(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fcmp(FloatCC::LessThan, x, y)
    }

    pub fn ty(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }

    /// True for f32x4 values.
    pub fn is_vec(&self, v: Value) -> bool {
        self.ty(v) == types::F32X4
    }

    /// A lane permutation of two f32x4 values: lane i of the result is lane `lanes[i]` of `a`
    /// (0-3) or of `b` (4-7). Cranelift picks pshufd/shufps/unpck* for the usual patterns.
    pub fn shuffle32(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let ai = self.b.ins().bitcast(types::I8X16, le, a);
        let bi = self.b.ins().bitcast(types::I8X16, le, b);
        let mut mask = [0u8; 16];
        for (i, &l) in lanes.iter().enumerate() {
            for byte in 0..4 {
                mask[i * 4 + byte] = l * 4 + byte as u8;
            }
        }
        let imm = self.b.func.dfg.immediates.push(cranelift_codegen::ir::ConstantData::from(&mask[..]));
        let r = self.b.ins().shuffle(ai, bi, imm);
        self.b.ins().bitcast(F32X4, le, r)
    }

    /// The transpose of a 4x4 block given as four row vectors: its four columns.
    pub fn transpose4(&mut self, [a, b, c, d]: [Value; 4]) -> [Value; 4] {
        let t0 = self.shuffle32(a, b, [0, 4, 1, 5]);
        let t1 = self.shuffle32(a, b, [2, 6, 3, 7]);
        let t2 = self.shuffle32(c, d, [0, 4, 1, 5]);
        let t3 = self.shuffle32(c, d, [2, 6, 3, 7]);
        [
            self.shuffle32(t0, t2, [0, 1, 4, 5]),
            self.shuffle32(t0, t2, [2, 3, 6, 7]),
            self.shuffle32(t1, t3, [0, 1, 4, 5]),
            self.shuffle32(t1, t3, [2, 3, 6, 7]),
        ]
    }
}
