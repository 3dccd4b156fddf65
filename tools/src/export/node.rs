//! Values and layout: a small pretty printer for the Rust expressions of
//! the exported file (valid Rust, close to rustfmt's layout).
use super::WIDTH;
use std::fmt::Write as _;

/// A Rust expression (or type) in the output, laid out by [`Node::write`].
#[derive(Clone, Debug)]
pub enum Node {
    /// Text printed as is (a literal, a path).
    Atom(String),
    /// `open item, item, … close`: arrays, tuples, calls, generic arguments.
    List {
        /// Opening text, e.g. `[`, `(`, `Flow::new(`, `Flow<`.
        open: String,
        /// Closing text.
        close: &'static str,
        /// The items.
        items: Vec<Node>,
        /// A one-item list needs a trailing comma (a 1-tuple).
        tuple: bool,
    },
    /// `Name { field: value, … }`.
    Struct {
        /// Struct name.
        name: String,
        /// Fields, in declaration order.
        fields: Vec<(String, Node)>,
    },
}

/// A float as a Rust `f32` literal that parses back to the same value.
pub fn f32_lit(v: f32) -> String {
    if v == f32::INFINITY {
        "f32::INFINITY".into()
    } else if v == f32::NEG_INFINITY {
        "f32::NEG_INFINITY".into()
    } else {
        assert!(!v.is_nan(), "NaN has no literal; model files refuse it");
        // `{:?}` is the shortest string that round-trips, and always has a `.`
        // or an exponent, so it is a float literal.
        format!("{v:?}")
    }
}

pub(super) fn atom(s: impl Into<String>) -> Node {
    Node::Atom(s.into())
}

pub(super) fn list(open: &str, close: &'static str, items: Vec<Node>) -> Node {
    Node::List {
        open: open.into(),
        close,
        items,
        tuple: false,
    }
}

pub(super) fn tuple(items: Vec<Node>) -> Node {
    Node::List {
        open: "(".into(),
        close: ")",
        items,
        tuple: true,
    }
}

pub(super) fn floats(v: &[f32]) -> Node {
    list("[", "]", v.iter().map(|&x| atom(f32_lit(x))).collect())
}

/// `rows` consecutive rows of `v` as an array of arrays.
pub(super) fn matrix(v: &[f32], cols: usize) -> Node {
    if cols == 0 {
        return list("[", "]", Vec::new());
    }
    list("[", "]", v.chunks(cols).map(floats).collect())
}

pub(super) fn strukt(name: &str, fields: Vec<(&str, Node)>) -> Node {
    Node::Struct {
        name: name.into(),
        fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

impl Node {
    /// The one-line form, if the node has one (structs never do).
    fn flat(&self) -> Option<String> {
        match self {
            Node::Atom(s) => Some(s.clone()),
            Node::List {
                open,
                close,
                items,
                tuple,
            } => {
                let mut s = open.clone();
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    s.push_str(&it.flat()?);
                }
                if *tuple && items.len() == 1 {
                    s.push(',');
                }
                s.push_str(close);
                Some(s)
            }
            Node::Struct { .. } => None,
        }
    }

    /// Append the node to `out`, whose current line already holds `col`
    /// characters, with block indentation `indent`; `tail` characters follow on
    /// the same line (e.g. `,` or `;`).
    pub fn write(&self, out: &mut String, indent: usize, col: usize, tail: usize) {
        if let Some(s) = self.flat() {
            if col + s.len() + tail <= WIDTH {
                out.push_str(&s);
                return;
            }
        }
        let pad = " ".repeat(indent + 4);
        match self {
            Node::Atom(s) => out.push_str(s),
            Node::List { open, close, items, .. } => {
                out.push_str(open);
                out.push('\n');
                if !items.is_empty() && items.iter().all(|i| matches!(i, Node::Atom(_))) {
                    // Pack short literals, one line after the other.
                    let mut line = String::new();
                    for it in items {
                        let Node::Atom(s) = it else { unreachable!() };
                        if !line.is_empty() && indent + 4 + line.len() + 1 + s.len() + 1 > WIDTH {
                            let _ = writeln!(out, "{pad}{}", line.trim_end());
                            line.clear();
                        }
                        let _ = write!(line, "{s}, ");
                    }
                    let _ = writeln!(out, "{pad}{}", line.trim_end());
                } else {
                    for it in items {
                        out.push_str(&pad);
                        it.write(out, indent + 4, indent + 4, 1);
                        out.push_str(",\n");
                    }
                }
                out.push_str(&" ".repeat(indent));
                out.push_str(close);
            }
            Node::Struct { name, fields } => {
                out.push_str(name);
                out.push_str(" {\n");
                for (k, v) in fields {
                    let _ = write!(out, "{pad}{k}: ");
                    v.write(out, indent + 4, indent + 4 + k.len() + 2, 1);
                    out.push_str(",\n");
                }
                out.push_str(&" ".repeat(indent));
                out.push('}');
            }
        }
    }
}

/// The constants and minimum digit counts of clippy's `approx_constant` lint.
const KNOWN_CONSTS: [(f64, usize); 19] = {
    use std::f64::consts::*;
    [
        (E, 4),
        (FRAC_1_PI, 4),
        (FRAC_1_SQRT_2, 5),
        (FRAC_2_PI, 5),
        (FRAC_2_SQRT_PI, 5),
        (FRAC_PI_2, 5),
        (FRAC_PI_3, 5),
        (FRAC_PI_4, 5),
        (FRAC_PI_6, 5),
        (FRAC_PI_8, 5),
        (LN_10, 5),
        (LN_2, 5),
        (LOG10_E, 5),
        (LOG2_E, 5),
        (LOG2_10, 5),
        (LOG10_2, 5),
        (PI, 3),
        (SQRT_2, 5),
        (TAU, 3),
    ]
};

/// `true` if clippy's `approx_constant` lint would flag the literal `lit`
/// (an `f32` that happens to equal e.g. `ln 2` to all printed digits).
pub fn looks_like_known_constant(lit: &str) -> bool {
    let v = lit.trim_start_matches('-');
    if v.parse::<f64>().is_err() {
        return false;
    }
    KNOWN_CONSTS.iter().any(|&(c, min_digits)| {
        v.len() > min_digits && (c.to_string().starts_with(v) || v.len() >= 2 && format!("{c:.*}", v.len() - 2) == v)
    })
}

impl Node {
    /// `true` if any literal in the node would trip clippy's `approx_constant`.
    pub(super) fn has_known_constant(&self) -> bool {
        match self {
            Node::Atom(s) => looks_like_known_constant(s),
            Node::List { items, .. } => items.iter().any(Node::has_known_constant),
            Node::Struct { fields, .. } => fields.iter().any(|(_, v)| v.has_known_constant()),
        }
    }
}
