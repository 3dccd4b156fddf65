//! `flowmote`: the host tool (placeholder until the trainer lands).
fn main() {
    eprintln!("flowmote tools: not yet implemented");
    std::process::exit(2);
}
