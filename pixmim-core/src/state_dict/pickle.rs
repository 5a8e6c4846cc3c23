//! A restricted pickle reader for `torch.save` files: it interprets the opcodes torch.save
//! writes (protocols 2 to 4) into an object graph and never calls anything. Globals are
//! names; `REDUCE` of a tensor-rebuilding function makes a [`Node::Tensor`], of anything else
//! an inert [`Node::Call`].
//!
//! A pickle is a program, so a crafted one is bounded here rather than trusted: every object
//! lives in one arena (no recursion to build or drop it, so deep nesting cannot overflow the
//! stack), memo references share arena slots instead of copying (a "billion laughs" costs its
//! own size), and the number of objects, the size of any one string, and the tensors' ranks
//! and sizes are capped. Any other opcode is refused with its byte offset.
use std::collections::HashMap;
use std::rc::Rc;

/// Most objects one pickle may make. A ViT-H checkpoint with its optimizer state makes about
/// 20,000; a state dict of every MIM model here, a few thousand.
pub const MAX_OBJECTS: usize = 2_000_000;
/// Most dimensions a tensor may declare (PyTorch's own limit is 64; MIM weights use <= 4).
pub const MAX_RANK: usize = 8;

/// A value on the pickle machine's stack.
#[derive(Clone, Debug, PartialEq)]
pub enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(usize),
    /// An object in the arena.
    Node(usize),
}

/// The element type of a storage, from its pickled class (`torch.FloatStorage`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A storage as `torch.save` names it: the zip entry `data/<key>` holding `numel` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Storage {
    pub key: String,
    pub dtype: Dtype,
    pub numel: u64,
}

/// A tensor view of a storage: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: Storage,
    pub offset: u64,
    pub shape: Vec<usize>,
    pub stride: Vec<u64>,
}

impl TensorRef {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
    /// The storage elements `[first, end)` the view reads (empty for an empty tensor).
    pub fn span(&self) -> (u64, u64) {
        if self.numel() == 0 {
            return (self.offset, self.offset);
        }
        let last: u64 = self
            .shape
            .iter()
            .zip(&self.stride)
            .map(|(&d, &s)| (d as u64 - 1) * s)
            .sum();
        (self.offset, self.offset + last + 1)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Tuple(Vec<V>),
    List(Vec<V>),
    /// dict and OrderedDict, in insertion order.
    Dict(Vec<(V, V)>),
    Global {
        module: String,
        name: String,
    },
    Storage(Storage),
    Tensor(TensorRef),
    /// The call of a global this reader does not interpret (kept, never run).
    Call {
        func: V,
    },
}

/// The object graph of one pickle: the arena and the value `STOP` returned.
pub struct Pickle {
    pub nodes: Vec<Node>,
    pub root: V,
}

impl Pickle {
    pub fn node(&self, v: &V) -> Option<&Node> {
        match v {
            V::Node(i) => self.nodes.get(*i),
            _ => None,
        }
    }
}

enum Item {
    Mark,
    Value(V),
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, V>,
    nodes: Vec<Node>,
}

type Res<T> = std::result::Result<T, String>;

/// Interpret `bytes` (a `data.pkl`), refusing anything torch.save does not write.
pub fn parse(bytes: &[u8]) -> Res<Pickle> {
    let mut m = Machine {
        bytes,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
    };
    let root = m.run()?;
    Ok(Pickle {
        nodes: m.nodes,
        root,
    })
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Res<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("the pickle ends inside an opcode at byte {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Res<usize> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Res<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Res<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn line(&mut self) -> Res<String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or_else(|| {
                format!(
                    "a GLOBAL name at byte {} is unterminated or too long",
                    self.pos
                )
            })?;
        let s = String::from_utf8(rest[..n].to_vec())
            .map_err(|_| format!("a GLOBAL name at byte {} is not text", self.pos))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn text(&mut self, n: usize) -> Res<V> {
        let at = self.pos;
        let b = self.take(n)?;
        let s =
            std::str::from_utf8(b).map_err(|_| format!("a string at byte {at} is not UTF-8"))?;
        Ok(V::Str(Rc::from(s)))
    }

    fn push(&mut self, v: V) {
        self.stack.push(Item::Value(v));
    }
    fn pop(&mut self) -> Res<V> {
        match self.stack.pop() {
            Some(Item::Value(v)) => Ok(v),
            Some(Item::Mark) => Err(format!("a MARK where a value belongs at byte {}", self.pos)),
            None => Err(format!("the stack is empty at byte {}", self.pos)),
        }
    }
    /// The values above the topmost MARK, which is removed.
    fn pop_mark(&mut self) -> Res<Vec<V>> {
        let at = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| format!("no MARK to close at byte {}", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|i| match i {
                Item::Value(v) => v,
                Item::Mark => unreachable!("the topmost mark is at `at`"),
            })
            .collect())
    }
    fn new_node(&mut self, n: Node) -> Res<V> {
        if self.nodes.len() >= MAX_OBJECTS {
            return Err(format!(
                "more than {MAX_OBJECTS} objects: not a checkpoint torch.save would write"
            ));
        }
        self.nodes.push(n);
        Ok(V::Node(self.nodes.len() - 1))
    }
    fn node_mut(&mut self, v: &V, what: &str) -> Res<&mut Node> {
        let at = self.pos;
        match v {
            V::Node(i) => Ok(&mut self.nodes[*i]),
            _ => Err(format!("{what} on a plain value at byte {at}")),
        }
    }
    fn memo_put(&mut self, key: u32) -> Res<()> {
        let v = match self.stack.last() {
            Some(Item::Value(v)) => v.clone(),
            _ => return Err(format!("nothing to memoize at byte {}", self.pos)),
        };
        if self.memo.len() > MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} memo entries"));
        }
        self.memo.insert(key, v);
        Ok(())
    }
    fn memo_get(&mut self, key: u32) -> Res<()> {
        let v = self.memo.get(&key).cloned().ok_or_else(|| {
            format!(
                "memo entry {key} is read before it is written (byte {})",
                self.pos
            )
        })?;
        self.push(v);
        Ok(())
    }
    fn global_name(&self, v: &V) -> Option<(String, String)> {
        match v {
            V::Node(i) => match &self.nodes[*i] {
                Node::Global { module, name } => Some((module.clone(), name.clone())),
                _ => None,
            },
            _ => None,
        }
    }

    fn run(&mut self) -> Res<V> {
        loop {
            let at = self.pos;
            if self.stack.len() > MAX_OBJECTS {
                return Err(format!(
                    "more than {MAX_OBJECTS} values on the stack at byte {at}"
                ));
            }
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("pickle protocol {p} is unknown"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.pop()?;
                    self.push(v.clone());
                    self.push(v);
                }
                b'N' => self.push(V::None),
                0x88 => self.push(V::Bool(true)),
                0x89 => self.push(V::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.push(V::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(V::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(V::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return Err(format!("an integer of {n} bytes at byte {at}"));
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(V::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.push(V::Float(v));
                }
                b'X' => {
                    let n = self.u32()?;
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).unwrap_or(usize::MAX);
                    let v = self.text(n)?;
                    self.push(v);
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.push(V::Bytes(n));
                }
                b'T' | b'B' => {
                    let n = self.u32()?;
                    self.take(n)?;
                    self.push(V::Bytes(n));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.push(V::Bytes(n));
                }
                b'}' => {
                    let v = self.new_node(Node::Dict(Vec::new()))?;
                    self.push(v);
                }
                b']' => {
                    let v = self.new_node(Node::List(Vec::new()))?;
                    self.push(v);
                }
                b')' => {
                    let v = self.new_node(Node::Tuple(Vec::new()))?;
                    self.push(v);
                }
                b't' | b'l' => {
                    let items = self.pop_mark()?;
                    let node = if op == b't' {
                        Node::Tuple(items)
                    } else {
                        Node::List(items)
                    };
                    let v = self.new_node(node)?;
                    self.push(v);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let v = self.new_node(Node::Tuple(items))?;
                    self.push(v);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items, at)?;
                    let v = self.new_node(Node::Dict(pairs))?;
                    self.push(v);
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.pop()?;
                    match self.node_mut(&list, "APPEND")? {
                        Node::List(l) => l.push(item),
                        _ => return Err(format!("APPEND to a non-list at byte {at}")),
                    }
                    self.push(list);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.pop()?;
                    match self.node_mut(&list, "APPENDS")? {
                        Node::List(l) => l.extend(items),
                        _ => return Err(format!("APPENDS to a non-list at byte {at}")),
                    }
                    self.push(list);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.pop()?;
                    match self.node_mut(&dict, "SETITEM")? {
                        Node::Dict(d) => d.push((key, value)),
                        _ => return Err(format!("SETITEM on a non-dict at byte {at}")),
                    }
                    self.push(dict);
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.pop()?;
                    let new = pairs(items, at)?;
                    match self.node_mut(&dict, "SETITEMS")? {
                        Node::Dict(d) => d.extend(new),
                        _ => return Err(format!("SETITEMS on a non-dict at byte {at}")),
                    }
                    self.push(dict);
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()? as u32;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()? as u32;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.new_node(Node::Global { module, name })?;
                    self.push(v);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (V::Str(module), V::Str(name)) = (module, name) else {
                        return Err(format!("STACK_GLOBAL of non-strings at byte {at}"));
                    };
                    let v = self.new_node(Node::Global {
                        module: module.to_string(),
                        name: name.to_string(),
                    })?;
                    self.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.storage(&pid, at)?;
                    let v = self.new_node(Node::Storage(storage))?;
                    self.push(v);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args, at)?;
                    self.push(v);
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.new_node(Node::Call { func: cls })?;
                    self.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state (an OrderedDict's `_metadata`, a
                    // Namespace's fields): not needed to read weights, so dropped.
                    self.pop()?;
                    if !matches!(self.stack.last(), Some(Item::Value(_))) {
                        return Err(format!("BUILD without an object at byte {at}"));
                    }
                }
                other => {
                    return Err(format!(
                        "opcode 0x{other:02x} at byte {at} is not one torch.save writes"
                    ))
                }
            }
        }
    }

    /// `('storage', torch.FloatStorage, key, location, numel)`.
    fn storage(&self, pid: &V, at: usize) -> Res<Storage> {
        let bad = || format!("a persistent id at byte {at} is not a tensor storage");
        let Some(Node::Tuple(t)) = (match pid {
            V::Node(i) => self.nodes.get(*i),
            _ => None,
        }) else {
            return Err(bad());
        };
        let [V::Str(kind), class, V::Str(key), _, V::Int(numel)] = t.as_slice() else {
            return Err(bad());
        };
        if &**kind != "storage" || *numel < 0 {
            return Err(bad());
        }
        let (_, class_name) = self.global_name(class).ok_or_else(bad)?;
        let dtype = Dtype::from_storage_class(&class_name)
            .ok_or_else(|| format!("storage type `{class_name}` at byte {at} is not supported"))?;
        if key.is_empty() || key.len() > 64 || key.contains(['/', '\\']) || key.contains("..") {
            return Err(format!(
                "storage key `{key}` at byte {at} is not a plain name"
            ));
        }
        Ok(Storage {
            key: key.to_string(),
            dtype,
            numel: *numel as u64,
        })
    }

    fn reduce(&mut self, func: V, args: V, at: usize) -> Res<V> {
        let name = self.global_name(&func);
        let args_tuple = match self.node(&args) {
            Some(Node::Tuple(t)) => t.clone(),
            _ => return Err(format!("REDUCE with non-tuple arguments at byte {at}")),
        };
        match name.as_ref().map(|(m, n)| (m.as_str(), n.as_str())) {
            Some(("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor")) => {
                let t = self.tensor(&args_tuple, at)?;
                self.new_node(Node::Tensor(t))
            }
            Some(("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")) => {
                match args_tuple.first() {
                    Some(v @ V::Node(i)) if matches!(self.nodes[*i], Node::Tensor(_)) => {
                        Ok(v.clone())
                    }
                    _ => Err(format!("a Parameter at byte {at} does not wrap a tensor")),
                }
            }
            Some(("collections", "OrderedDict")) if args_tuple.is_empty() => {
                self.new_node(Node::Dict(Vec::new()))
            }
            _ => self.new_node(Node::Call { func }),
        }
    }

    fn node(&self, v: &V) -> Option<&Node> {
        match v {
            V::Node(i) => self.nodes.get(*i),
            _ => None,
        }
    }

    fn ints(&self, v: &V, at: usize, what: &str) -> Res<Vec<u64>> {
        let Some(Node::Tuple(t)) = self.node(v) else {
            return Err(format!("a tensor's {what} at byte {at} is not a tuple"));
        };
        if t.len() > MAX_RANK {
            return Err(format!(
                "a tensor at byte {at} has {} dimensions (at most {MAX_RANK})",
                t.len()
            ));
        }
        t.iter()
            .map(|x| match x {
                V::Int(i) if *i >= 0 => Ok(*i as u64),
                _ => Err(format!("a tensor's {what} at byte {at} holds {x:?}")),
            })
            .collect()
    }

    /// `(storage, storage_offset, size, stride, ...)`, with the view checked to lie inside
    /// its storage (checked arithmetic: declared sizes are not trusted).
    fn tensor(&self, args: &[V], at: usize) -> Res<TensorRef> {
        let [storage, V::Int(offset), size, stride, ..] = args else {
            return Err(format!("a tensor at byte {at} has malformed arguments"));
        };
        let Some(Node::Storage(storage)) = self.node(storage) else {
            return Err(format!("a tensor at byte {at} has no storage"));
        };
        let shape = self.ints(size, at, "size")?;
        let stride = self.ints(stride, at, "stride")?;
        if shape.len() != stride.len() || *offset < 0 {
            return Err(format!(
                "a tensor at byte {at} has a malformed size or stride"
            ));
        }
        let too_big =
            || format!("a tensor at byte {at} declares a size {shape:?} beyond any storage");
        let mut numel: u64 = 1;
        let mut last: u64 = 0;
        for (&d, &s) in shape.iter().zip(&stride) {
            numel = numel.checked_mul(d).ok_or_else(too_big)?;
            if d > 0 {
                last = (d - 1)
                    .checked_mul(s)
                    .and_then(|x| x.checked_add(last))
                    .ok_or_else(too_big)?;
            }
        }
        let offset = *offset as u64;
        if numel > 0 {
            let end = offset
                .checked_add(last)
                .and_then(|x| x.checked_add(1))
                .ok_or_else(too_big)?;
            if end > storage.numel {
                return Err(format!(
                    "a tensor at byte {at} of size {shape:?} reads storage `{}` up to element {end}, \
                     which holds {}",
                    storage.key, storage.numel
                ));
            }
        }
        Ok(TensorRef {
            storage: storage.clone(),
            offset,
            shape: shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| too_big()))
                .collect::<Res<_>>()?,
            stride,
        })
    }
}

fn pairs(items: Vec<V>, at: usize) -> Res<Vec<(V, V)>> {
    if !items.len().is_multiple_of(2) {
        return Err(format!("an odd number of dict items at byte {at}"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_references_share_instead_of_copying() {
        // A "billion laughs": each list holds its predecessor ten times, 30 levels deep.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for level in 1..30u8 {
            p.extend([b']', b'q', level, b'(']);
            for _ in 0..10 {
                p.extend([b'h', level - 1]);
            }
            p.push(b'e');
        }
        p.push(b'.');
        let pk = parse(&p).unwrap();
        assert_eq!(
            pk.nodes.len(),
            30,
            "one node per level, however many references"
        );
    }

    #[test]
    fn deep_nesting_neither_recurses_nor_overflows() {
        // 1,000,000 nested lists: built and dropped without recursion.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', 1_000_000));
        p.extend(std::iter::repeat_n(b'l', 1_000_000));
        p.push(b'.');
        let pk = parse(&p).unwrap();
        assert_eq!(pk.nodes.len(), 1_000_000);
    }

    #[test]
    fn opcodes_torch_save_never_writes_are_refused_with_their_offset() {
        // `i` (INST) calls a class by name: refused, not run.
        let e = parse(b"\x80\x02(i__builtin__\nlist\n.").err().unwrap();
        assert!(e.contains("opcode 0x69 at byte 3"), "{e}");
        let e = parse(b"\x80\x02").err().unwrap();
        assert!(e.contains("ends inside"), "{e}");
    }

    #[test]
    fn a_view_outside_its_storage_is_refused() {
        let tensor = |numel: u8, size: u8| {
            let mut p = vec![0x80, 2, b'c'];
            p.extend(b"torch._utils\n_rebuild_tensor_v2\n(");
            p.extend(b"(X\x07\0\0\0storage");
            p.extend(b"ctorch\nFloatStorage\n");
            p.extend(b"X\x01\0\0\x000X\x03\0\0\0cpuK");
            p.extend([
                numel, b't', b'Q', b'K', 0, b'K', size, 0x85, b'K', 1, 0x85, 0x89, b't',
            ]);
            p.extend([b'R', b'.']);
            p
        };
        let ok = parse(&tensor(4, 4)).unwrap();
        assert!(matches!(ok.node(&ok.root), Some(Node::Tensor(t)) if t.shape == [4]));
        let e = parse(&tensor(4, 5)).err().unwrap();
        assert!(e.contains("up to element 5, which holds 4"), "{e}");
    }
}
