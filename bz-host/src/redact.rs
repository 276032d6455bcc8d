//! What bz prints or records of a URL that may carry secrets: an index's `user:token@`, a `?token=`, a signed
//! URL's signature, a database password. One place decides it for every message, receipt and header.

use url::Url;

/// Query keys whose values are secrets in the URLs people paste: API tokens and the signatures of signed URLs
/// (S3, GCS, Azure SAS, CloudFront).
const SECRET_KEYS: [&str; 17] = [
    "token",
    "access_token",
    "private_token",
    "auth",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "policy",
];

/// A URL as messages and receipts show it: no `user:password@`, and the values of secret query keys replaced.
pub fn url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) || k.to_ascii_lowercase().ends_with("token");
                (k.into_owned(), if secret { "REDACTED".into() } else { v.into_owned() })
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redaction_hides_credentials_tokens_and_signatures() {
        assert_eq!(url(&u("https://alice:s3cr3t@example.invalid/i.json")), "https://example.invalid/i.json");
        let r = url(&u("https://h.invalid/a.tar.gz?X-Amz-Signature=abc&X-Amz-Credential=AK&x=1&private_token=pt&sig=zz&gitlab_token=q"));
        for secret in ["abc", "AK", "pt", "zz", "=q"] {
            assert!(!r.contains(secret), "{r}");
        }
        assert!(r.contains("x=1"), "{r}");
    }

    #[test]
    fn a_database_password_is_hidden_too() {
        let r = url(&u("postgresql://bz:s3cr3t@db.invalid:5432/study?password=s3cr3t"));
        assert!(!r.contains("s3cr3t") && r.starts_with("postgresql://db.invalid:5432/study"), "{r}");
    }
}
