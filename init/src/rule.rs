//! A rule as data: table, chain, append or insert, and the match/target tokens.

use std::fmt;

/// The iptables tables this crate writes to. `Ord` is by name: the rendered order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Mangle,
    Nat,
    Raw,
}

impl Table {
    /// Every table, sorted by name.
    pub const ALL: [Table; 3] = [Table::Mangle, Table::Nat, Table::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IP family: which of `iptables` / `ip6tables` gets the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Where the rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// `-A`: at the end.
    Append,
    /// `-I <n>`: at 1-based position n.
    Insert(u32),
}

/// One iptables rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: &'static str,
    pub position: Position,
    /// Match and target tokens, e.g. `["-p", "tcp", "-j", "ISTIO_INBOUND"]`.
    pub spec: Vec<String>,
}

impl Rule {
    /// The chain this rule jumps to (`-j X`), if any.
    pub fn target(&self) -> Option<&str> {
        self.spec
            .iter()
            .position(|t| t == "-j")
            .and_then(|i| self.spec.get(i + 1))
            .map(String::as_str)
    }

    /// The rule's spec as one string, tokens joined by spaces.
    pub fn spec_text(&self) -> String {
        self.spec.join(" ")
    }
}

impl fmt::Display for Rule {
    /// The iptables-restore line: `-A CHAIN spec` or `-I CHAIN n spec`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Append => write!(f, "-A {}", self.chain)?,
            Position::Insert(n) => write!(f, "-I {} {n}", self.chain)?,
        }
        for token in &self.spec {
            write!(f, " {token}")?;
        }
        Ok(())
    }
}

/// Whether a chain is one of iptables' built-in chains.
pub fn is_builtin(chain: &str) -> bool {
    crate::names::BUILTIN_CHAINS.contains(&chain)
}

/// Builds a rule spec from anything printable: `spec!["-p", "tcp", "--dport", port]`.
macro_rules! spec {
    ($($token:expr),* $(,)?) => {
        vec![$($token.to_string()),*]
    };
}
pub(crate) use spec;
