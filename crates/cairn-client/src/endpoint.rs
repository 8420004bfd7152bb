//! Endpoint strings as users type them (`127.0.0.1:4379`, `http://node1:4379/`) turned into the
//! one canonical form the client dials (`http://127.0.0.1:4379`), so that duplicates are found and
//! error messages name endpoints the same way everywhere.

use crate::error::ClientError;
use crate::ENDPOINTS_MAX;

/// The only scheme accepted: Cairn's client port speaks plaintext gRPC (no TLS yet).
const SCHEME_PREFIX: &str = "http://";

/// Turns one endpoint into `http://HOST:PORT`.
///
/// Accepts `HOST:PORT`, `http://HOST:PORT` and either with a trailing `/`. Rejects an empty
/// string, any other scheme (TLS is not supported), a missing port and a path, because each of
/// those would otherwise fail later with a less helpful transport error.
pub fn normalize_endpoint(raw: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        endpoint: raw.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("empty endpoint"));
    }
    let with_scheme = match trimmed.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
            format!("{SCHEME_PREFIX}{}", &trimmed[scheme.len() + 3..])
        }
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(invalid(
                "TLS (https) is not supported; use http:// or HOST:PORT",
            ));
        }
        Some(_) => return Err(invalid("unsupported scheme; use http:// or HOST:PORT")),
        None => format!("{SCHEME_PREFIX}{trimmed}"),
    };
    let uri: tonic::codegen::http::Uri = with_scheme
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("missing host"))?
        .clone();
    if authority.host().is_empty() {
        return Err(invalid("missing host"));
    }
    if authority.port_u16().is_none() {
        return Err(invalid("missing port (expected HOST:PORT)"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(invalid("a path is not allowed (expected HOST:PORT)"));
    }
    if uri.query().is_some() {
        return Err(invalid("a query is not allowed (expected HOST:PORT)"));
    }
    Ok(format!("{SCHEME_PREFIX}{authority}"))
}

/// Normalises a list of endpoints: blank entries are skipped (so `"a,,b,"` split on commas
/// works), duplicates after normalisation are dropped keeping the first, and the result must hold
/// between 1 and [`ENDPOINTS_MAX`] endpoints.
pub fn normalize_endpoints<I, S>(raw: I) -> Result<Vec<String>, ClientError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out: Vec<String> = Vec::new();
    for item in raw {
        let item = item.as_ref();
        if item.trim().is_empty() {
            continue;
        }
        let endpoint = normalize_endpoint(item)?;
        if !out.contains(&endpoint) {
            out.push(endpoint);
        }
    }
    if out.is_empty() {
        return Err(ClientError::NoEndpoints);
    }
    if out.len() > ENDPOINTS_MAX {
        return Err(ClientError::TooManyEndpoints {
            count: out.len(),
            max: ENDPOINTS_MAX,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_gets_http_scheme() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:4379").unwrap(),
            "http://127.0.0.1:4379"
        );
        assert_eq!(
            normalize_endpoint("  node1:4379 ").unwrap(),
            "http://node1:4379"
        );
    }

    #[test]
    fn http_scheme_and_trailing_slash_are_canonicalised() {
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:4379/").unwrap(),
            "http://127.0.0.1:4379"
        );
        assert_eq!(
            normalize_endpoint("HTTP://localhost:2379").unwrap(),
            "http://localhost:2379"
        );
    }

    #[test]
    fn ipv6_literal_is_kept() {
        assert_eq!(
            normalize_endpoint("[::1]:4379").unwrap(),
            "http://[::1]:4379"
        );
    }

    #[test]
    fn bad_endpoints_are_rejected_with_the_reason() {
        for bad in [
            "",
            "   ",
            "127.0.0.1",
            "https://127.0.0.1:4379",
            "unix:///tmp/sock",
            "http://127.0.0.1:4379/v3",
            "http://:4379",
            "127.0.0.1:notaport",
        ] {
            let err = normalize_endpoint(bad).expect_err(bad);
            assert!(
                matches!(err, ClientError::InvalidEndpoint { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn list_skips_blanks_and_duplicates() {
        let eps = normalize_endpoints("a:1,,http://a:1/, b:2,".split(',')).unwrap();
        assert_eq!(eps, vec!["http://a:1", "http://b:2"]);
    }

    #[test]
    fn empty_list_is_an_error() {
        assert!(matches!(
            normalize_endpoints(["", " "]),
            Err(ClientError::NoEndpoints)
        ));
        assert!(matches!(
            normalize_endpoints(Vec::<String>::new()),
            Err(ClientError::NoEndpoints)
        ));
    }

    #[test]
    fn list_is_bounded() {
        let many: Vec<String> = (0..=ENDPOINTS_MAX)
            .map(|i| format!("h:{}", 1000 + i))
            .collect();
        assert!(matches!(
            normalize_endpoints(&many),
            Err(ClientError::TooManyEndpoints { .. })
        ));
        assert_eq!(
            normalize_endpoints(&many[..ENDPOINTS_MAX]).unwrap().len(),
            ENDPOINTS_MAX
        );
    }
}
