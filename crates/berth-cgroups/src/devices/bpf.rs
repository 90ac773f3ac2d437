//! Generation of a `BPF_PROG_TYPE_CGROUP_DEVICE` program from device rules, in the style of runc's
//! `devicefilter`: the rules are emitted last-first, each block returning as soon as it matches, so the
//! last matching rule wins; the program ends with the default verdict.
//!
//! The program context is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! where `access_type` is `(access << 16) | type`.

use super::{DevType, DeviceRule, ACC_MKNOD, ACC_READ, ACC_WRITE};

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (4 bits).
    pub dst: u8,
    /// Source register (4 bits).
    pub src: u8,
    /// Signed offset (jumps: relative to the next instruction).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

// Opcode pieces (linux/bpf_common.h, linux/bpf.h).
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_JEQ: u8 = 0x10;
const BPF_JA: u8 = 0x00;
const BPF_EXIT: u8 = 0x90;

/// `BPF_DEVCG_DEV_BLOCK`.
pub const DEV_BLOCK: i32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
pub const DEV_CHAR: i32 = 2;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }
    /// `dst = *(u32 *)(src + off)`
    pub const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
    }
    /// `dst = (u32)dst & imm`
    pub const fn and32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, imm)
    }
    /// `dst = (u32)dst >> imm`
    pub const fn rsh32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, imm)
    }
    /// `dst = (u32)src`
    pub const fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
    }
    /// `dst = (u32)imm`
    pub const fn mov32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, imm)
    }
    /// `if dst != imm goto +off`
    pub const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)
    }
    /// `if dst == imm goto +off`
    pub const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
    }
    /// `goto +off`
    pub const fn ja(off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JA, 0, 0, off, 0)
    }
    /// `if dst != src goto +off`
    pub const fn jne_reg(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JNE | BPF_X, dst, src, off, 0)
    }
    /// `return r0`
    pub const fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }

    /// The kernel's 8-byte encoding (little-endian host).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// Build the filter for `rules` (in spec order). The verdict is computed per requested access bit
/// (`r`, `w`, `m`): for each bit, the last rule that matches the device and includes that bit
/// decides; with no matching rule the bit is denied. The access is allowed only if every requested
/// bit is. This is what "last matching rule wins" means for rules with partial access, and matches
/// how cgroup v1 merges exceptions per access bit.
pub fn device_filter_program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut asm = Asm::default();
    asm.extend([
        // r2 = type (low 16 bits of access_type)
        Insn::ldx_w(R2, R1, 0),
        Insn::and32_imm(R2, 0xffff),
        // r3 = access (high 16 bits of access_type)
        Insn::ldx_w(R3, R1, 0),
        Insn::rsh32_imm(R3, 16),
        // r4 = major, r5 = minor
        Insn::ldx_w(R4, R1, 4),
        Insn::ldx_w(R5, R1, 8),
    ]);
    for bit in [ACC_READ, ACC_WRITE, ACC_MKNOD] {
        let section_end = asm.label();
        // Skip this section if the bit is not requested.
        asm.push(Insn::mov32_reg(R1, R3));
        asm.push(Insn::and32_imm(R1, bit as i32));
        asm.jump(Insn::jeq_imm(R1, 0, 0), section_end);
        let mut decided = false;
        for r in rules.iter().rev().filter(|r| r.access & bit != 0) {
            let next_rule = asm.label();
            let mut unconditional = true;
            let dev_type = match r.typ {
                DevType::Char => Some(DEV_CHAR),
                DevType::Block => Some(DEV_BLOCK),
                DevType::All => None,
            };
            if let Some(t) = dev_type {
                asm.jump(Insn::jne_imm(R2, t, 0), next_rule);
                unconditional = false;
            }
            if let Some(m) = r.major {
                asm.jump(Insn::jne_imm(R4, m as i32, 0), next_rule);
                unconditional = false;
            }
            if let Some(m) = r.minor {
                asm.jump(Insn::jne_imm(R5, m as i32, 0), next_rule);
                unconditional = false;
            }
            if r.allow {
                asm.jump(Insn::ja(0), section_end);
            } else {
                asm.push(Insn::mov32_imm(R0, 0));
                asm.push(Insn::exit());
            }
            asm.bind(next_rule);
            if unconditional {
                // Matches every device: earlier rules cannot decide this bit.
                decided = true;
                break;
            }
        }
        if !decided {
            // No rule matched: deny.
            asm.push(Insn::mov32_imm(R0, 0));
            asm.push(Insn::exit());
        }
        asm.bind(section_end);
    }
    asm.push(Insn::mov32_imm(R0, 1));
    asm.push(Insn::exit());
    asm.finish()
}

/// A tiny assembler with forward labels.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn push(&mut self, i: Insn) {
        self.insns.push(i);
    }
    fn extend(&mut self, i: impl IntoIterator<Item = Insn>) {
        self.insns.extend(i);
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }
    fn jump(&mut self, i: Insn, label: usize) {
        self.fixups.push((self.insns.len(), label));
        self.insns.push(i);
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            // Every label is bound before finish(); an unbound one would be a bug here, and
            // jumping to the end (the final "allow") is never emitted for it.
            let target = self.labels[label].unwrap_or(self.insns.len() - 1);
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
}

/// Run a program the way the kernel would for one device access (tests and debugging).
/// Supports exactly the instructions [`device_filter_program`] emits; returns `None` on anything else.
pub fn interpret(
    insns: &[Insn],
    dev_type: i32,
    access: u32,
    major: u32,
    minor: u32,
) -> Option<bool> {
    let ctx = [(access << 16) | (dev_type as u32 & 0xffff), major, minor];
    let mut reg = [0u64; 11];
    let mut pc = 0usize;
    // Only forward jumps are emitted, so a well-formed program ends within len steps.
    for _ in 0..insns.len() + 1 {
        let i = insns.get(pc)?;
        let (d, s) = (usize::from(i.dst), usize::from(i.src));
        if d > 10 || s > 10 {
            return None;
        }
        pc += 1;
        match i.code {
            c if c == BPF_LDX | BPF_MEM | BPF_W => {
                if s != 1 || i.off % 4 != 0 {
                    return None;
                }
                reg[d] = u64::from(*ctx.get(usize::try_from(i.off / 4).ok()?)?);
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => {
                reg[d] = u64::from((reg[d] as u32) & (i.imm as u32))
            }
            c if c == BPF_ALU | BPF_RSH | BPF_K => {
                reg[d] = u64::from((reg[d] as u32) >> (i.imm as u32))
            }
            c if c == BPF_ALU | BPF_MOV | BPF_X => reg[d] = u64::from(reg[s] as u32),
            c if c == BPF_ALU | BPF_MOV | BPF_K => reg[d] = u64::from(i.imm as u32),
            c if c == BPF_JMP | BPF_JNE | BPF_K => {
                if reg[d] != i64::from(i.imm) as u64 {
                    pc = usize::try_from(pc as isize + isize::from(i.off)).ok()?;
                }
            }
            c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                if reg[d] == i64::from(i.imm) as u64 {
                    pc = usize::try_from(pc as isize + isize::from(i.off)).ok()?;
                }
            }
            c if c == BPF_JMP | BPF_JA => {
                pc = usize::try_from(pc as isize + isize::from(i.off)).ok()?;
            }
            c if c == BPF_JMP | BPF_JNE | BPF_X => {
                if reg[d] != reg[s] {
                    pc = usize::try_from(pc as isize + isize::from(i.off)).ok()?;
                }
            }
            c if c == BPF_JMP | BPF_EXIT => return Some(reg[0] != 0),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::ACC_ALL;

    fn rule(
        allow: bool,
        typ: DevType,
        major: Option<u32>,
        minor: Option<u32>,
        access: u32,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            typ,
            major,
            minor,
            access,
        }
    }

    const PROLOGUE: [Insn; 6] = [
        Insn::ldx_w(2, 1, 0),
        Insn::and32_imm(2, 0xffff),
        Insn::ldx_w(3, 1, 0),
        Insn::rsh32_imm(3, 16),
        Insn::ldx_w(4, 1, 4),
        Insn::ldx_w(5, 1, 8),
    ];

    /// Checks `p`'s verdict on each (device type, access, major, minor, allowed) case.
    fn expect(p: &[Insn], cases: &[(i32, u32, u32, u32, bool)]) {
        for &(dev_type, access, major, minor, allowed) in cases {
            assert_eq!(
                interpret(p, dev_type, access, major, minor),
                Some(allowed),
                "type {dev_type} access {access:#b} {major}:{minor}"
            );
        }
    }

    #[test]
    fn empty_rules_deny_everything() {
        let p = device_filter_program(&[]);
        assert_eq!(&p[..6], &PROLOGUE);
        // Each section: test bit, deny; then the final allow.
        let section = |bit: i32| {
            [
                Insn::mov32_reg(1, 3),
                Insn::and32_imm(1, bit),
                Insn::jeq_imm(1, 0, 2),
                Insn::mov32_imm(0, 0),
                Insn::exit(),
            ]
        };
        let mut want = PROLOGUE.to_vec();
        want.extend(section(ACC_READ as i32));
        want.extend(section(ACC_WRITE as i32));
        want.extend(section(ACC_MKNOD as i32));
        want.extend([Insn::mov32_imm(0, 1), Insn::exit()]);
        assert_eq!(p, want);
        expect(
            &p,
            &[
                (DEV_CHAR, ACC_READ, 1, 3, false),
                (DEV_BLOCK, ACC_MKNOD, 8, 0, false),
            ],
        );
    }

    #[test]
    fn exact_encoding() {
        assert_eq!(
            Insn::ldx_w(2, 1, 4).encode(),
            [0x61, 0x12, 4, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::jne_imm(4, 136, 3).encode(),
            [0x55, 0x04, 3, 0, 136, 0, 0, 0]
        );
        assert_eq!(
            Insn::jeq_imm(1, 0, 2).encode(),
            [0x15, 0x01, 2, 0, 0, 0, 0, 0]
        );
        assert_eq!(Insn::ja(-1).encode(), [0x05, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(
            Insn::mov32_reg(1, 3).encode(),
            [0xbc, 0x31, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::and32_imm(2, 0xffff).encode(),
            [0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0]
        );
        assert_eq!(
            Insn::rsh32_imm(3, 16).encode(),
            [0x74, 0x03, 0, 0, 16, 0, 0, 0]
        );
        assert_eq!(Insn::mov32_imm(0, 1).encode(), [0xb4, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Insn::exit().encode(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn one_rule_block_layout() {
        // allow c 1:3 r: only the read section has a rule block.
        let p = device_filter_program(&[rule(true, DevType::Char, Some(1), Some(3), ACC_READ)]);
        assert_eq!(
            &p[6..16],
            &[
                Insn::mov32_reg(1, 3),
                Insn::and32_imm(1, ACC_READ as i32),
                Insn::jeq_imm(1, 0, 6),        // -> write section
                Insn::jne_imm(2, DEV_CHAR, 3), // -> default deny
                Insn::jne_imm(4, 1, 2),
                Insn::jne_imm(5, 3, 1),
                Insn::ja(2), // allowed: -> write section
                Insn::mov32_imm(0, 0),
                Insn::exit(),
                Insn::mov32_reg(1, 3),
            ]
        );
        expect(
            &p,
            &[
                (DEV_CHAR, ACC_READ, 1, 3, true),
                (DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3, false),
                (DEV_BLOCK, ACC_READ, 1, 3, false),
            ],
        );
    }

    #[test]
    fn last_matching_rule_wins_per_access_bit() {
        let rules = [
            rule(false, DevType::All, None, None, ACC_ALL),
            rule(true, DevType::Char, Some(1), None, ACC_ALL),
            rule(false, DevType::Char, Some(1), Some(3), ACC_READ),
            rule(true, DevType::All, Some(136), None, ACC_READ | ACC_WRITE),
        ];
        let p = device_filter_program(&rules);
        // c 1:5 allowed by the second rule
        expect(
            &p,
            &[
                (DEV_CHAR, ACC_READ, 1, 5, true),
                (DEV_CHAR, ACC_ALL, 1, 5, true),
                // c 1:3: read denied by the third rule, write and mknod still allowed by the second
                (DEV_CHAR, ACC_READ, 1, 3, false),
                (DEV_CHAR, ACC_WRITE, 1, 3, true),
                (DEV_CHAR, ACC_MKNOD, 1, 3, true),
                (DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3, false),
                // 136:* both types rw but not mknod
                (DEV_BLOCK, ACC_WRITE, 136, 9, true),
                (DEV_CHAR, ACC_READ | ACC_WRITE, 136, 9, true),
                (DEV_CHAR, ACC_MKNOD, 136, 9, false),
                // block 1:5 is not char: denied by the first rule
                (DEV_BLOCK, ACC_READ, 1, 5, false),
                (DEV_CHAR, ACC_READ, 5, 1, false),
            ],
        );
    }

    #[test]
    fn separate_allows_combine() {
        // r and w allowed by different rules: an rw open is allowed (as cgroup v1 merges them).
        let rules = [
            rule(true, DevType::Char, Some(1), Some(3), ACC_READ),
            rule(true, DevType::Char, Some(1), Some(3), ACC_WRITE),
        ];
        let p = device_filter_program(&rules);
        expect(
            &p,
            &[
                (DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3, true),
                (DEV_CHAR, ACC_MKNOD, 1, 3, false),
            ],
        );
    }

    #[test]
    fn wildcard_overrides_earlier_rules() {
        let rules = [
            rule(false, DevType::Char, Some(1), Some(3), ACC_ALL),
            rule(true, DevType::All, None, None, ACC_ALL),
            rule(false, DevType::Char, Some(1), Some(5), ACC_READ),
        ];
        let p = device_filter_program(&rules);
        // The deny of 1:3 came before the allow-all, so it is overridden.
        expect(
            &p,
            &[
                (DEV_CHAR, ACC_READ, 1, 3, true),
                (DEV_CHAR, ACC_READ, 1, 5, false),
                (DEV_CHAR, ACC_WRITE, 1, 5, true),
                (DEV_BLOCK, ACC_ALL, 8, 0, true),
            ],
        );
        // The shadowed first rule is not emitted at all.
        assert!(
            !p.contains(&Insn::jne_imm(5, 3, 0))
                && !p.iter().any(|i| i.code == 0x55 && i.dst == 5 && i.imm == 3)
        );
    }

    #[test]
    fn jumps_stay_in_bounds_and_forward() {
        let mut rules = vec![rule(false, DevType::All, None, None, ACC_ALL)];
        for i in 0..50 {
            rules.push(rule(
                i % 2 == 0,
                DevType::Char,
                Some(i),
                if i % 3 == 0 { None } else { Some(i) },
                ACC_READ,
            ));
        }
        let p = device_filter_program(&rules);
        for (idx, i) in p.iter().enumerate() {
            if i.code & 0x07 == 0x05 && i.code != 0x95 {
                let target = idx as isize + 1 + isize::from(i.off);
                assert!(
                    target > idx as isize && (target as usize) < p.len(),
                    "insn {idx}"
                );
            }
        }
        assert_eq!(p.last(), Some(&Insn::exit()));
        for i in 0..50u32 {
            let expect = i % 2 == 0;
            assert_eq!(
                interpret(&p, DEV_CHAR, ACC_READ, i, i),
                Some(expect),
                "dev {i}"
            );
            assert_eq!(
                interpret(&p, DEV_CHAR, ACC_WRITE, i, i),
                Some(false),
                "dev {i}"
            );
        }
    }
}
