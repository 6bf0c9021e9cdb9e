//! `cargo xtask`: the project's own tasks.

fn main() {
    eprintln!("usage: cargo xtask <ci|fuzz>");
    std::process::exit(2);
}
