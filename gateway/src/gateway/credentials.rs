//! The Secrets credentials read their values from, as the sources deliver
//! them (a watch per Secret from the API, or a directory of files), and the
//! header value a request gets from one. Values are kept here and nowhere
//! else: not in the policy, and never in a `Debug`, an error or a log.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use egress_policy::credential::Credential;
use http::HeaderValue;

use crate::error::Error;

/// What a source knows of one Secret.
#[derive(Clone)]
pub enum SecretState {
    /// Its data, by key.
    Data(BTreeMap<String, Vec<u8>>),
    /// It does not exist (or was deleted).
    Missing,
    /// It could not be read, and no earlier version was: why (no value in it).
    Unreadable(String),
}

impl std::fmt::Debug for SecretState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretState::Data(data) => f
                .debug_tuple("Data")
                .field(&data.keys().collect::<Vec<_>>())
                .finish(),
            SecretState::Missing => f.write_str("Missing"),
            SecretState::Unreadable(why) => f.debug_tuple("Unreadable").field(why).finish(),
        }
    }
}

/// The Secrets, by name.
#[derive(Debug, Default)]
pub struct Secrets {
    by_name: RwLock<HashMap<String, SecretState>>,
}

impl Secrets {
    /// Records what a source read of `secret`. A Secret that cannot be
    /// read keeps the version read before it (an outage stops nothing).
    pub fn set(&self, secret: &str, state: SecretState) {
        if let Ok(mut map) = self.by_name.write() {
            let keeps = matches!(state, SecretState::Unreadable(_))
                && matches!(map.get(secret), Some(SecretState::Data(_)));
            if !keeps {
                map.insert(secret.to_owned(), state);
            }
        }
    }

    /// Keeps only the Secrets named in `wanted`.
    pub fn retain(&self, wanted: &[&str]) {
        if let Ok(mut map) = self.by_name.write() {
            map.retain(|name, _| wanted.contains(&name.as_str()));
        }
    }

    /// The header value `credential` sends now: its prefix and the
    /// Secret's value. Fails, naming the credential and never the value,
    /// when the Secret or its key is not there or the value cannot be a
    /// header value.
    pub fn header_value(&self, credential: &Credential) -> Result<HeaderValue, Error> {
        let failed = |why: String| Error::Credential {
            name: credential.name.clone(),
            why,
        };
        let map = self
            .by_name
            .read()
            .map_err(|_| failed("the Secret store is unusable".to_owned()))?;
        let data = match map.get(&credential.secret) {
            Some(SecretState::Data(data)) => data,
            Some(SecretState::Unreadable(why)) => {
                return Err(failed(format!(
                    "Secret {} cannot be read: {why}",
                    credential.secret
                )));
            }
            Some(SecretState::Missing) | None => {
                return Err(failed(format!("Secret {} not found", credential.secret)));
            }
        };
        let value = data.get(&credential.key).ok_or_else(|| {
            failed(format!(
                "Secret {} has no key {}",
                credential.secret, credential.key
            ))
        })?;
        // A trailing newline is how values are often written (`echo`), never
        // part of a token.
        let value = value.strip_suffix(b"\n").unwrap_or(value);
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        let mut bytes = Vec::with_capacity(credential.value_prefix.len() + value.len());
        bytes.extend_from_slice(credential.value_prefix.as_bytes());
        bytes.extend_from_slice(value);
        let mut header = HeaderValue::from_bytes(&bytes).map_err(|_| {
            failed(format!(
                "the value of Secret {} key {} is not a valid header value (control characters or line breaks)",
                credential.secret, credential.key
            ))
        })?;
        header.set_sensitive(true);
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use egress_policy::spec::{
        CredentialClients, CredentialDestination, CredentialSpec, SecretKeyRef,
    };

    use super::*;

    fn credential() -> Credential {
        let spec = CredentialSpec {
            name: "llm-key".into(),
            secret_ref: SecretKeyRef {
                name: "llm".into(),
                key: "token".into(),
            },
            header: "Authorization".into(),
            value_prefix: "Bearer ".into(),
            destination: CredentialDestination {
                domains: vec!["api.example".into()],
                path_prefix: None,
            },
            clients: CredentialClients {
                namespaces: vec!["a".into()],
                ..CredentialClients::default()
            },
        };
        Credential::compile("c", &spec, |_| true).expect("valid")
    }

    #[test]
    fn values_are_read_and_failures_name_the_credential_not_the_value() {
        let secrets = Secrets::default();
        let credential = credential();
        let error = secrets.header_value(&credential).expect_err("none yet");
        assert_eq!(
            error.to_string(),
            "credential llm-key: Secret llm not found"
        );

        let data = |value: &[u8]| {
            SecretState::Data(BTreeMap::from([("token".to_owned(), value.to_vec())]))
        };
        secrets.set("llm", data(b"sk-SECRET\n"));
        let value = secrets.header_value(&credential).expect("a value");
        assert_eq!(value, "Bearer sk-SECRET");
        assert!(value.is_sensitive());
        assert!(!format!("{secrets:?}").contains("SECRET"), "{secrets:?}");

        secrets.set("llm", data(b"sk-SECRET\r\nX-Evil: 1"));
        let error = secrets.header_value(&credential).expect_err("refused");
        assert!(!error.to_string().contains("SECRET"), "{error}");
        assert!(
            error.to_string().contains("not a valid header value"),
            "{error}"
        );

        secrets.set("llm", SecretState::Data(BTreeMap::new()));
        let error = secrets.header_value(&credential).expect_err("no key");
        assert_eq!(
            error.to_string(),
            "credential llm-key: Secret llm has no key token"
        );

        // Unreadable after a good version: that version stays in use.
        secrets.set("llm", data(b"sk-SECRET"));
        secrets.set("llm", SecretState::Unreadable("connection refused".into()));
        assert_eq!(
            secrets.header_value(&credential).expect("kept"),
            "Bearer sk-SECRET"
        );

        secrets.set("llm", SecretState::Missing);
        secrets.set("llm", SecretState::Unreadable("forbidden".into()));
        let error = secrets.header_value(&credential).expect_err("unreadable");
        assert_eq!(
            error.to_string(),
            "credential llm-key: Secret llm cannot be read: forbidden"
        );
        secrets.retain(&[]);
        assert!(secrets.header_value(&credential).is_err());
    }
}
