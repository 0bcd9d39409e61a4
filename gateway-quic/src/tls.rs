//! Certificates for the gateway and how clients trust them.
//!
//! A gateway either loads a PEM certificate chain and key (production, a
//! certificate a CA signed) or generates a self-signed certificate at start.
//! Clients of a self-signed gateway pin its certificate: they accept exactly
//! the certificate whose SHA-256 fingerprint they were given, and nothing else.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Why a certificate, key or fingerprint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong with it.
        message: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, the key or the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A fingerprint is not 64 hex digits.
    #[error("a certificate fingerprint is 64 hex digits (SHA-256), optionally separated by ':'; got {0:?}")]
    BadFingerprint(String),
}

/// The SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(certificate: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(certificate).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = TlsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || TlsError::BadFingerprint(text.to_owned());
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// A certificate chain and its private key, ready for the gateway.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A fresh self-signed certificate for `names` (DNS names or IP
    /// addresses), valid as of now.
    pub fn self_signed(names: &[String]) -> Result<Identity, TlsError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
        Ok(Identity {
            chain: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into()),
        })
    }

    /// The self-signed certificate kept in `dir` (`cert.pem`, `key.pem`),
    /// generated for `names` on first use so that its fingerprint, which
    /// clients pin, stays the same across restarts.
    pub fn self_signed_in(dir: &Path, names: &[String]) -> Result<Identity, TlsError> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() && key.exists() {
            return Identity::from_pem_files(&cert, &key);
        }
        let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
        let write = |path: &Path, text: String| {
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(path, text))
                .map_err(|e| TlsError::Pem {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        };
        write(&key, certified.key_pair.serialize_pem())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600));
        }
        write(&cert, certified.cert.pem())?;
        Ok(Identity {
            chain: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into()),
        })
    }

    /// Loads a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let pem_error = |path: &Path, message: String| TlsError::Pem {
            path: path.display().to_string(),
            message,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_error(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(cert, "no CERTIFICATE block found".into()));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e.to_string()))?;
        Ok(Identity {
            chain,
            key: key_der,
        })
    }

    /// The fingerprint of the first certificate in PEM text, for clients
    /// that pin a certificate file they were given.
    pub fn certificate_fingerprint(pem: &[u8]) -> Option<Fingerprint> {
        let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
        Some(Fingerprint::of(&first))
    }

    /// The leaf certificate's fingerprint, for clients to pin. An identity
    /// built by hand with an empty chain (which no gateway starts with) has
    /// the fingerprint of no bytes, which matches no certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        let leaf: &[u8] = self.chain.first().map_or(&[], |leaf| leaf.as_ref());
        Fingerprint::of(leaf)
    }
}

/// The crypto provider Grove uses on both sides (and between hosts).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the server certificate with a given fingerprint; the TLS
/// handshake signature is still checked against that certificate's key.
#[derive(Debug)]
pub struct PinnedCertificate {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl PinnedCertificate {
    /// A verifier accepting exactly the certificate with `fingerprint`.
    pub fn new(fingerprint: Fingerprint) -> PinnedCertificate {
        PinnedCertificate {
            fingerprint,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::debug!(expected = %self.fingerprint, %got, "server certificate does not match the pin");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_as_hex_and_parse_back_with_or_without_colons() {
        let identity = Identity::self_signed(&["localhost".into()]).unwrap();
        let fp = identity.fingerprint();
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(colons.join(":").parse::<Fingerprint>().unwrap(), fp);
        assert!("abc".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn pem_files_load_and_keep_their_fingerprint() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("grove-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let identity = Identity::from_pem_files(&cert, &key).unwrap();
        assert_eq!(
            identity.fingerprint(),
            Fingerprint::of(certified.cert.der())
        );
        let kept = Identity::self_signed_in(&dir.join("kept"), &["localhost".into()]).unwrap();
        let again = Identity::self_signed_in(&dir.join("kept"), &["localhost".into()]).unwrap();
        assert_eq!(kept.fingerprint(), again.fingerprint());
        let pem = std::fs::read(dir.join("kept/cert.pem")).unwrap();
        assert_eq!(
            Identity::certificate_fingerprint(&pem),
            Some(kept.fingerprint())
        );
        std::fs::write(&cert, "not pem").unwrap();
        let error = Identity::from_pem_files(&cert, &key).unwrap_err();
        assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
