//! bpf-linker is an undeclared dependency of this crate (cargo cannot express
//! it); rebuild when it changes, and say plainly when it is missing.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!("cargo:warning=bpf-linker not found on PATH: run `cargo xtask setup`");
        }
    }
}
