//! The filter's container image: a build context holding only
//! deploy/Dockerfile (`FROM scratch`) and a statically linked
//! egress-loader, and the check that a binary is static. `cargo xtask
//! image` and the Docker end-to-end tests build their images from it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::workspace::workspace_root;

/// The Dockerfile, relative to the workspace root.
pub const DOCKERFILE: &str = "deploy/Dockerfile";
/// The binary's name in the build context (the Dockerfile COPYs it).
pub const CONTEXT_BINARY: &str = "egress-loader";

/// Whether the ELF file at `path` needs no dynamic loader: it has no
/// `PT_INTERP` program header (static-pie binaries still have `PT_DYNAMIC`).
/// Fails if it is not a 64-bit ELF file.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    // A dynamic executable names its loader in a PT_INTERP program header.
    Ok(!elf
        .elf_program_headers()
        .iter()
        .any(|h| h.p_type(elf.endian()) == object::elf::PT_INTERP))
}

/// Makes `dir` an empty directory, removing whatever it held.
pub fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Stages the image's build context in `context` (emptied first): the
/// Dockerfile and `loader`, nothing else. Refuses a dynamically linked
/// `loader`: the image has no libc.
pub fn stage_context(context: &Path, loader: &Path) -> Result<()> {
    if !is_static_elf(loader)? {
        bail!(
            "{} is dynamically linked; the image is FROM scratch",
            loader.display()
        );
    }
    fresh_dir(context)?;
    let dockerfile = dockerfile();
    fs::copy(&dockerfile, context.join("Dockerfile"))
        .with_context(|| format!("copying {}", dockerfile.display()))?;
    fs::copy(loader, context.join(CONTEXT_BINARY))
        .with_context(|| format!("copying {}", loader.display()))?;
    Ok(())
}

/// The absolute path of [`DOCKERFILE`].
pub fn dockerfile() -> PathBuf {
    workspace_root().join(DOCKERFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("egress-devtools-{}-{name}", std::process::id()));
        fresh_dir(&dir).unwrap();
        dir
    }

    /// A 64-bit little-endian ELF executable with one program header of
    /// type `p_type` and nothing else: with PT_LOAD it looks like a static
    /// binary to [`is_static_elf`], with PT_INTERP like a dynamic one.
    fn tiny_elf(p_type: u32) -> Vec<u8> {
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
        elf.resize(16, 0);
        elf.extend(2u16.to_le_bytes()); // e_type: ET_EXEC
        elf.extend(62u16.to_le_bytes()); // e_machine: x86-64 (not checked)
        elf.extend(1u32.to_le_bytes()); // e_version
        elf.extend(0u64.to_le_bytes()); // e_entry
        elf.extend(64u64.to_le_bytes()); // e_phoff: right after this header
        elf.extend(0u64.to_le_bytes()); // e_shoff: no section headers
        elf.extend(0u32.to_le_bytes()); // e_flags
        elf.extend(64u16.to_le_bytes()); // e_ehsize
        elf.extend(56u16.to_le_bytes()); // e_phentsize
        elf.extend(1u16.to_le_bytes()); // e_phnum
        elf.extend(64u16.to_le_bytes()); // e_shentsize
        elf.extend([0; 4]); // e_shnum, e_shstrndx
        elf.extend(p_type.to_le_bytes());
        elf.extend(4u32.to_le_bytes()); // p_flags: PF_R
        elf.extend([0; 48]); // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        assert_eq!(elf.len(), 64 + 56);
        elf
    }

    #[test]
    fn static_and_dynamic_elf() {
        // The test binary itself is dynamically linked (glibc default).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let dir = scratch("elf");
        let not_elf = dir.join("script");
        fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(is_static_elf(&not_elf).is_err());
        for (p_type, is_static) in [
            (object::elf::PT_LOAD, true),
            (object::elf::PT_INTERP, false),
        ] {
            let path = dir.join(format!("elf-{p_type}"));
            fs::write(&path, tiny_elf(p_type)).unwrap();
            assert_eq!(is_static_elf(&path).unwrap(), is_static, "p_type {p_type}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dockerfile_is_from_scratch_and_copies_the_context_binary() {
        let text = fs::read_to_string(dockerfile()).unwrap();
        let from: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
            .collect();
        assert_eq!(from, ["FROM scratch"], "{text}");
        assert!(text.contains(&format!("COPY {CONTEXT_BINARY} ")), "{text}");
    }

    #[test]
    fn context_refuses_a_dynamic_loader_and_holds_nothing_else() {
        let dir = scratch("ctx");
        let context = dir.join("context");
        fresh_dir(&context).unwrap();
        fs::write(context.join("left-over"), b"from an earlier build").unwrap();
        let me = std::env::current_exe().unwrap();
        let err = stage_context(&context, &me).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        // The context is left as it was when the loader is refused.
        assert!(context.join("left-over").is_file());

        let loader = dir.join("some-loader-name");
        fs::write(&loader, tiny_elf(object::elf::PT_LOAD)).unwrap();
        stage_context(&context, &loader).unwrap();
        let mut names: Vec<String> = fs::read_dir(&context)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["Dockerfile", CONTEXT_BINARY]);
        assert_eq!(
            fs::read(context.join("Dockerfile")).unwrap(),
            fs::read(dockerfile()).unwrap()
        );
        assert_eq!(
            fs::read(context.join(CONTEXT_BINARY)).unwrap(),
            tiny_elf(object::elf::PT_LOAD)
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
