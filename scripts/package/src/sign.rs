//! Keys and signatures: the index's (`sign-index`), the key rotation's (`rotate-key`) and each artifact's. The
//! trusted comments are what bz's installer compares, so their formats are the contract with it:
//!
//! - artifact: `bz-plugin name=NAME version=VERSION target=TARGET sha256=HEX`
//! - index:    `bz-index version=V expires=YYYY-MM-DDTHH:MM:SSZ`
//! - rotation: `bz-key-rotation next=BASE64`

use crate::index::{self, KeyRotation};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use std::path::Path;

pub const EXPIRES_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

pub fn artifact_comment(name: &str, version: &str, target: &str, sha256: &str) -> String {
    format!("bz-plugin name={name} version={version} target={target} sha256={sha256}")
}

pub fn index_comment(version: u64, expires: &str) -> String {
    format!("bz-index version={version} expires={expires}")
}

pub fn rotation_comment(next: &str) -> String {
    format!("bz-key-rotation next={next}")
}

/// An unencrypted minisign secret key, or an encrypted one with its password in BZ_SIGNING_PASSWORD.
pub fn secret_key(path: &Path) -> Result<minisign::SecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the key {}", path.display()))?;
    if minisign::PublicKeyBox::from_string(&text).and_then(|b| b.into_public_key()).is_ok() {
        bail!("{} is a public key: --key takes the secret key (the .key file beside it)", path.display());
    }
    let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|e| anyhow::anyhow!("{}: not a minisign secret key ({e})", path.display()))?;
    let sk = sk_box.into_unencrypted_secret_key().or_else(|_| match std::env::var("BZ_SIGNING_PASSWORD") {
        Ok(pw) => minisign::SecretKeyBox::from_string(&text).and_then(|b| b.into_secret_key(Some(pw))),
        Err(_) => Err(minisign::PError::new(minisign::ErrorKind::Misc, "the key is encrypted: set BZ_SIGNING_PASSWORD")),
    });
    sk.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn public_of(sk: &minisign::SecretKey) -> Result<minisign::PublicKey> {
    minisign::PublicKey::from_secret_key(sk).map_err(|e| anyhow::anyhow!("cannot derive the public key: {e}"))
}

/// A `.pub` file as keygen (or the minisign tool) writes it, or a file holding just its base64 line.
pub fn public_key_file(path: &Path) -> Result<minisign::PublicKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the public key {}", path.display()))?;
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    minisign::PublicKey::from_base64(line)
        .map_err(|e| anyhow::anyhow!("{}: not a minisign public key ({e}): pass the .pub file bz-package keygen wrote", path.display()))
}

/// The full text of a prehashed minisign signature over `data`.
pub fn sign(sk: &minisign::SecretKey, data: &[u8], trusted_comment: &str) -> Result<String> {
    Ok(minisign::sign(None, sk, data, Some(trusted_comment), None).map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?.into_string())
}

/// Whether `sig_text` is `pk`'s signature over `data` with exactly `trusted_comment`.
pub fn verifies(pk: &minisign::PublicKey, sig_text: &str, data: &[u8], trusted_comment: &str) -> bool {
    let Ok(sig) = minisign::SignatureBox::from_string(sig_text) else { return false };
    sig.trusted_comment().is_ok_and(|c| c == trusted_comment) && minisign::verify(pk, &sig, std::io::Cursor::new(data), true, false, false).is_ok()
}

/// Writes `sig_path` unless it already holds a signature by this key over `data` with this comment: signatures
/// are randomised, and re-signing unchanged bytes would make every run publish a new file.
pub fn sign_file(sk: &minisign::SecretKey, sig_path: &Path, data: &[u8], trusted_comment: &str) -> Result<bool> {
    let pk = public_of(sk)?;
    if std::fs::read_to_string(sig_path).is_ok_and(|old| verifies(&pk, &old, data, trusted_comment)) {
        return Ok(false);
    }
    index::write_atomic(sig_path, sign(sk, data, trusted_comment)?.as_bytes())?;
    Ok(true)
}

/// `sign-index`: nothing when the present signature is this key's over the present bytes and the index is not
/// expiring within half the validity (so a cached quick start stays fast and the version stable); otherwise the
/// next version, a new expiry and a new signature. Returns the line to print.
pub fn sign_index(dist: &Path, key: &Path, expires_days: u32, now: DateTime<Utc>) -> Result<String> {
    let sk = secret_key(key)?;
    let pk = public_of(&sk)?;
    let (mut idx, bytes) = index::load_existing(dist)?;
    let validity = chrono::Duration::days(expires_days.into());
    if let (Some(version), Some(expires)) = (idx.version, idx.expires.as_deref()) {
        let fresh = DateTime::parse_from_rfc3339(expires).is_ok_and(|e| e.with_timezone(&Utc) > now + validity / 2);
        let signed = std::fs::read_to_string(index::sig_path(dist)).is_ok_and(|s| verifies(&pk, &s, &bytes, &index_comment(version, expires)));
        if fresh && signed && bytes == index::to_bytes(&idx) {
            return Ok(format!("index.json unchanged (version {version}, expires {expires})"));
        }
    }
    let version = idx.version.unwrap_or(0) + 1;
    let expires = (now + validity).format(EXPIRES_FORMAT).to_string();
    idx.version = Some(version);
    idx.expires = Some(expires.clone());
    let bytes = index::to_bytes(&idx);
    let sig = sign(&sk, &bytes, &index_comment(version, &expires))?;
    // The old signature cannot cover the new bytes: drop it first, so a failure leaves an unsigned index, not a
    // mismatched pair.
    let _ = std::fs::remove_file(index::sig_path(dist));
    index::write_atomic(&index::index_path(dist), &bytes)?;
    index::write_atomic(&index::sig_path(dist), sig.as_bytes())?;
    Ok(format!("signed {}: version {version}, expires {expires}", index::index_path(dist).display()))
}

/// `rotate-key`: records the next key, vouched for by the current one, in the index. The current signature (if
/// any) must be by `old`, since that is the key users hold.
pub fn rotate_key(dist: &Path, old: &Path, next: &Path) -> Result<String> {
    let sk = secret_key(old)?;
    let next_line = public_key_file(next)?.to_base64();
    if next_line == public_of(&sk)?.to_base64() {
        bail!("{} is the public key of {} itself: --next takes the new key's .pub", next.display(), old.display());
    }
    let (mut idx, bytes) = index::load_existing(dist)?;
    if let Ok(sig) = std::fs::read_to_string(index::sig_path(dist)) {
        let by_old = minisign::SignatureBox::from_string(&sig)
            .is_ok_and(|s| minisign::verify(&public_of(&sk).expect("derived above"), &s, std::io::Cursor::new(&bytes), true, false, false).is_ok());
        if !by_old {
            bail!(
                "{} is not {}'s signature over index.json: rotate with the key the channel's users trust (--key), or re-sign with it first",
                index::sig_path(dist).display(),
                old.display()
            );
        }
    }
    let signature = sign(&sk, next_line.as_bytes(), &rotation_comment(&next_line))?;
    idx.key_rotation = Some(KeyRotation { pubkey: next_line.clone(), signature });
    index::save(dist, &idx, Some(&bytes))?;
    Ok(format!(
        "{}: key_rotation to {next_line}; now sign the index with the new key: bz-package sign-index --dist {} --key NEW.key",
        index::index_path(dist).display(),
        dist.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Index, SCHEMA};

    fn key(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let sk = dir.join(format!("{name}.key"));
        std::fs::write(&sk, kp.sk.to_box(None).unwrap().into_string()).unwrap();
        std::fs::write(dir.join(format!("{name}.pub")), kp.pk.to_box().unwrap().into_string()).unwrap();
        (sk, kp.pk.to_base64())
    }

    fn dist_with_index(dir: &Path) -> std::path::PathBuf {
        let dist = dir.join("dist");
        index::save(&dist, &Index { schema: SCHEMA, ..Index::default() }, None).unwrap();
        dist
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sign_index_is_a_no_op_until_the_index_changes_or_nears_expiry() {
        let d = tempfile::tempdir().unwrap();
        let (k, pubkey) = key(d.path(), "k");
        let dist = dist_with_index(d.path());
        let msg = sign_index(&dist, &k, 30, at("2026-01-01T00:00:00Z")).unwrap();
        assert!(msg.contains("version 1, expires 2026-01-31T00:00:00Z"), "{msg}");
        let signed = std::fs::read(index::index_path(&dist)).unwrap();
        // Checked by the verifier bz itself uses, not the signing crate.
        let pk = minisign_verify::PublicKey::from_base64(&pubkey).unwrap();
        let sig = minisign_verify::Signature::decode(&std::fs::read_to_string(index::sig_path(&dist)).unwrap()).unwrap();
        pk.verify(&signed, &sig, false).unwrap();
        assert_eq!(sig.trusted_comment(), "bz-index version=1 expires=2026-01-31T00:00:00Z");

        let msg = sign_index(&dist, &k, 30, at("2026-01-15T00:00:00Z")).unwrap();
        assert_eq!(msg, "index.json unchanged (version 1, expires 2026-01-31T00:00:00Z)");
        assert_eq!(std::fs::read(index::index_path(&dist)).unwrap(), signed);
        // Within half the validity of the expiry: a new version, so users never meet an expired index.
        let msg = sign_index(&dist, &k, 30, at("2026-01-16T00:00:01Z")).unwrap();
        assert!(msg.contains("version 2, expires 2026-02-15T00:00:01Z"), "{msg}");
    }

    #[test]
    fn sign_index_bumps_after_an_edit_or_with_another_key() {
        let d = tempfile::tempdir().unwrap();
        let (k, _) = key(d.path(), "k");
        let (other, _) = key(d.path(), "other");
        let dist = dist_with_index(d.path());
        let now = at("2026-01-01T00:00:00Z");
        sign_index(&dist, &k, 30, now).unwrap();
        let (mut idx, bytes) = index::load_existing(&dist).unwrap();
        idx.plugins.insert("p".into(), serde_json::json!({ "description": "", "versions": [] }));
        index::save(&dist, &idx, Some(&bytes)).unwrap();
        assert!(!index::sig_path(&dist).exists());
        assert!(sign_index(&dist, &k, 30, now).unwrap().contains("version 2"));
        assert!(sign_index(&dist, &other, 30, now).unwrap().contains("version 3"));
        let e = sign_index(&d.path().join("nowhere"), &k, 30, now).unwrap_err().to_string();
        assert!(e.contains("does not exist: pack plugins"), "{e}");
    }

    #[test]
    fn a_public_key_is_not_taken_for_the_secret_one() {
        let d = tempfile::tempdir().unwrap();
        key(d.path(), "k");
        let e = secret_key(&d.path().join("k.pub")).unwrap_err().to_string();
        assert!(e.contains("is a public key: --key takes the secret key"), "{e}");
    }

    #[test]
    fn rotate_key_vouches_for_the_next_key_with_the_current_one() {
        let d = tempfile::tempdir().unwrap();
        let (old, old_pub) = key(d.path(), "old");
        let (new, new_pub) = key(d.path(), "new");
        let dist = dist_with_index(d.path());
        sign_index(&dist, &old, 30, Utc::now()).unwrap();
        let e = rotate_key(&dist, &new, &d.path().join("old.pub")).unwrap_err().to_string();
        assert!(e.contains("is not") && e.contains("new.key"), "{e}");
        let e = rotate_key(&dist, &old, &d.path().join("old.pub")).unwrap_err().to_string();
        assert!(e.contains("itself"), "{e}");
        rotate_key(&dist, &old, &d.path().join("new.pub")).unwrap();
        assert!(!index::sig_path(&dist).exists());
        let (idx, _) = index::load_existing(&dist).unwrap();
        let r = idx.key_rotation.unwrap();
        assert_eq!(r.pubkey, new_pub);
        let sig = minisign_verify::Signature::decode(&r.signature).unwrap();
        minisign_verify::PublicKey::from_base64(&old_pub).unwrap().verify(new_pub.as_bytes(), &sig, false).unwrap();
        assert_eq!(sig.trusted_comment(), format!("bz-key-rotation next={new_pub}"));
        assert!(sign_index(&dist, &new, 30, Utc::now()).unwrap().contains("version 2"));
    }
}
