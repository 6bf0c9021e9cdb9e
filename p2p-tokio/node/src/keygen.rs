//! `p2p-node keygen`: a fresh identity written as PEM files.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use p2p_transport::identity::NodeIdentity;

use crate::{EXIT_CONFIG, EXIT_FAILURE, fail};

/// Writes `dir/key.pem` (owner-only permissions; a version 1 PKCS#8 `PRIVATE KEY`, which
/// `openssl pkey` reads) and `dir/cert.pem`, and prints the node id in hex on stdout. Existing
/// files are kept unless `force`.
pub fn run(dir: &Path, force: bool) -> u8 {
    let key_path = dir.join("key.pem");
    let cert_path = dir.join("cert.pem");
    if !force {
        for p in [&key_path, &cert_path] {
            if p.exists() {
                return fail(
                    EXIT_CONFIG,
                    format!("{} exists; pass --force to overwrite it", p.display()),
                );
            }
        }
    }
    let identity = match NodeIdentity::generate() {
        Ok(i) => i,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(
            EXIT_FAILURE,
            format!("cannot create {}: {e}", dir.display()),
        );
    }
    if let Err(e) = write_file(&key_path, identity.key_pem(), true) {
        return fail(
            EXIT_FAILURE,
            format!("cannot write {}: {e}", key_path.display()),
        );
    }
    if let Err(e) = write_file(&cert_path, identity.cert_pem(), false) {
        return fail(
            EXIT_FAILURE,
            format!("cannot write {}: {e}", cert_path.display()),
        );
    }
    println!("{}", identity.node_id().to_hex());
    0
}

fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
